"""Conversation files: valid ones round-trip, each broken rule names turn, item and rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mio_agent.conversation import conversation_from_json, conversation_to_json, load_conversation
from mio_agent.exceptions import ConversationError

GOOD: dict[str, Any] = {
    "mode": "voice",
    "turns": [
        {
            "role": "user",
            "content": [
                {"text": "hi"},
                {"speech": {"content": [12, 873]}},
                {"image": {"codes": list(range(32))}},
            ],
        },
        {
            "role": "assistant",
            "content": [{"speech": {"content": [1, 2], "timbre": [[3, 4], [5, 6], [7, 8]]}}],
        },
    ],
}


def test_round_trip() -> None:
    conv = conversation_from_json(GOOD)
    assert conversation_to_json(conv) == GOOD


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (lambda d: d["turns"][0].update(role="robot"), ["turn 0", "unknown role 'robot'"]),
        (
            lambda d: d["turns"][0]["content"].append({"video": {}}),
            ["turn 0, item 3", "unknown item 'video'"],
        ),
        (
            lambda d: d["turns"][0]["content"][1]["speech"].update(content=[1024]),
            ["turn 0, item 1 (speech)", "0..1023"],
        ),
        (
            lambda d: d["turns"][0]["content"][2]["image"].update(codes=list(range(31))),
            ["item 2 (image)", "exactly 32"],
        ),
        (
            lambda d: d["turns"][0]["content"][2]["image"].update(codes=[8192] * 32),
            ["item 2 (image)", "0..8191"],
        ),
        (
            lambda d: d["turns"][1]["content"][0]["speech"].update(timbre=[[3], [5, 6], [7, 8]]),
            ["turn 1, item 0 (speech)", "same length"],
        ),
        (
            lambda d: d["turns"][1]["content"][0]["speech"].update(timbre=[[3, 4]]),
            ["turn 1, item 0", "3 lists"],
        ),
        (lambda d: d.update(mode="custom"), ["custom", "system"]),
        (lambda d: d.update(system="x"), ["only for mode 'custom'"]),
        (lambda d: d.update(mode="whisper"), ["mode 'whisper'"]),
        (lambda d: d["turns"][0].update(content=[]), ["turn 0", "non-empty"]),
        (
            lambda d: d["turns"][0]["content"][1]["speech"].update(content=[]),
            ["item 1 (speech)", "at least one"],
        ),
        (
            lambda d: d["turns"][0]["content"][1]["speech"].update(content=["7"]),
            ["item 1 (speech)", "integers"],
        ),
        (
            lambda d: d["turns"][0]["content"][0].update(speech={"content": [1]}),
            ["turn 0, item 0", "exactly one key"],
        ),
    ],
)
def test_each_broken_rule_is_named(mutate: Any, fragments: list[str]) -> None:
    data = json.loads(json.dumps(GOOD))
    mutate(data)
    with pytest.raises(ConversationError) as info:
        conversation_from_json(data)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"mode": "std", "turns": [', encoding="utf-8")
    with pytest.raises(ConversationError, match=r"bad\.json: invalid JSON at line 1"):
        load_conversation(bad)
    with pytest.raises(ConversationError, match="cannot read"):
        load_conversation(tmp_path / "missing.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD), encoding="utf-8")
    assert load_conversation(good).mode == "voice"
