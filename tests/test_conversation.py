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


def _turn(*content: Any) -> dict[str, Any]:
    return {"mode": "std", "turns": [{"role": "user", "content": list(content)}]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], 'a conversation file is a JSON object with "mode" and "turns"'),
        (
            {"mode": "std", "turns": [], "speed": 1, "extra": 2},
            "unknown top-level key(s) ['extra', 'speed']: allowed are mode, system, turns",
        ),
        ({"mode": "custom", "system": 3}, '"system" must be a string'),
        ({"turns": {}}, '"turns" must be a list of {"role": ..., "content": [...]} objects'),
        ({"turns": ["hi"]}, 'turn 0: must be an object {"role": ..., "content": [...]}'),
        (
            {"turns": [{"role": "user", "content": "a", "name": "b", "id": 1}]},
            "turn 0: unknown key(s) ['id', 'name']: allowed are role, content",
        ),
        ({"mode": "whisper"}, "mode 'whisper': expected one of std, voice, custom"),
        (
            _turn(5),
            'turn 0, item 0 (?): an item is an object with exactly one key: "text", "speech" or "image"',
        ),
        (
            _turn({"text": "a", "image": {}}),
            'turn 0, item 0 (?): an item is an object with exactly one key: "text", "speech" or "image"',
        ),
        (_turn({"text": 3}), 'turn 0, item 0 (text): "text" must be a string, got int'),
        (
            _turn({"speech": [1]}),
            'turn 0, item 0 (speech): "speech" must be an object '
            '{"content": [...], "timbre": [[...],[...],[...]]}',
        ),
        (
            _turn({"speech": {"content": [1], "pitch": 2, "gain": 1}}),
            "turn 0, item 0 (speech): \"speech\" has unknown key(s) ['gain', 'pitch']: allowed are content, timbre",
        ),
        (
            _turn({"speech": {"timbre": [[1], [2], [3]]}}),
            'turn 0, item 0 (speech): "speech" lacks "content" (a list of codes 0..1023)',
        ),
        (
            _turn({"speech": {"content": (1,)}}),
            "turn 0, item 0 (speech): speech content must be a list of integers, got tuple",
        ),
        (
            _turn({"speech": {"content": [1, True]}}),
            "turn 0, item 0 (speech): speech content code #1 is True: codes are integers",
        ),
        (
            _turn({"speech": {"content": [2**62]}}),
            f"turn 0, item 0 (speech): speech content code #0 is {2**62}: it must be in 0..{2**62 - 1}",
        ),
        (
            _turn({"speech": {"content": [1023, 1024]}}),
            "turn 0, item 0 (speech): speech content code #1 is 1024: it must be in 0..1023",
        ),
        (
            _turn({"speech": {"content": []}}),
            "turn 0, item 0 (speech): speech has no content codes: a speech item needs at least one",
        ),
        (
            _turn({"speech": {"content": [1], "timbre": [[1], [2]]}}),
            'turn 0, item 0 (speech): speech "timbre" must be a list of exactly 3 lists of codes 0..1023',
        ),
        (
            _turn({"speech": {"content": [1], "timbre": [[1], "x", [3]]}}),
            "turn 0, item 0 (speech): speech timbre 1 must be a list of integers, got str",
        ),
        (
            _turn({"speech": {"content": [1], "timbre": [[1], [2], [3, 4]]}}),
            "turn 0, item 0 (speech): speech timbre list 2 has 2 codes but content has 1: "
            "all four parts must be of the same length",
        ),
        (
            _turn({"speech": {"content": [1], "timbre": [[1], [2], [1024]]}}),
            "turn 0, item 0 (speech): speech timbre 2 code #0 is 1024: it must be in 0..1023",
        ),
        (
            _turn({"image": {"codes": list(range(32)), "size": 1}}),
            'turn 0, item 0 (image): "image" must be an object {"codes": [32 codes 0..8191]}',
        ),
        (
            _turn({"image": [1]}),
            'turn 0, item 0 (image): "image" must be an object {"codes": [32 codes 0..8191]}',
        ),
        (
            _turn({"image": {"codes": "abc"}}),
            "turn 0, item 0 (image): image must be a list of integers, got str",
        ),
        (
            _turn({"image": {"codes": [0] * 31 + [8192]}}),
            "turn 0, item 0 (image): image code #31 is 8192: it must be in 0..8191",
        ),
        (
            _turn({"image": {"codes": [0] * 33}}),
            "turn 0, item 0 (image): image has 33 codes: an image is exactly 32",
        ),
        ({"mode": "custom"}, "mode 'custom' needs a \"system\" prompt; add one or use mode std/voice"),
        (
            {"mode": "voice", "system": "x"},
            "mode 'voice' has a fixed system prompt; \"system\" is only for mode 'custom'",
        ),
    ],
)
def test_error_messages_are_exact(data: Any, message: str) -> None:
    with pytest.raises(ConversationError) as info:
        conversation_from_json(data)
    assert str(info.value) == message


def test_defaults_text_shorthand_and_custom_system_round_trip() -> None:
    from mio_agent.conversation import Conversation, TextPart, Turn

    assert conversation_from_json({}) == Conversation("std")
    conv = conversation_from_json(
        {"mode": "custom", "system": "Be brief.", "turns": [{"role": "user", "content": "hi"}]}
    )
    assert conv == Conversation("custom", (Turn("user", (TextPart("hi"),)),), system="Be brief.")
    assert conversation_to_json(conv) == {
        "mode": "custom",
        "system": "Be brief.",
        "turns": [{"role": "user", "content": [{"text": "hi"}]}],
    }
    assert conversation_from_json(conversation_to_json(conv)) == conv


def test_load_errors_are_exact(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(ConversationError) as info:
        load_conversation(missing)
    assert str(info.value) == f"{missing}: cannot read (No such file or directory)"
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"turns": [{"role": "user", "content": "caf\u00e9"}]}'.encode("latin-1"))
    with pytest.raises(ConversationError) as info:
        load_conversation(latin)
    assert str(info.value) == f"{latin}: not UTF-8 text"
    bad = tmp_path / "bad.json"
    bad.write_text('{"mode": "std", "turns": [{"role": "bot", "content": "x"}]}', encoding="utf-8")
    with pytest.raises(ConversationError) as info:
        load_conversation(bad)
    assert str(info.value) == f"{bad}: turn 0: unknown role 'bot': expected 'user' or 'assistant'"
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_turn({"text": "caf\u00e9"}), ensure_ascii=False), encoding="utf-8")
    assert conversation_to_json(load_conversation(good)) == _turn({"text": "caf\u00e9"})


def test_parts_and_conversations_built_in_code_are_checked_too() -> None:
    from mio_agent.conversation import Conversation, SpeechPart

    with pytest.raises(ConversationError) as info:
        Conversation("whisper")  # type: ignore[arg-type]
    assert str(info.value) == "mode 'whisper': expected one of std, voice, custom"
    with pytest.raises(ConversationError) as info:
        SpeechPart((1, 2), ((1, 2), (3, 4)))  # type: ignore[arg-type]
    assert str(info.value) == "speech timbre has 2 lists: it needs exactly 3 (RVQ layers 2-4)"
