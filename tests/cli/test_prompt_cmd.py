"""`mio-agent prompt`: exact prompt text and ids of a conversation file, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mio_agent.cli.main import main
from tests.cli.conftest import run_cli

CONV = {
    "mode": "custom",
    "system": "Be brief.",
    "turns": [
        {"role": "user", "content": [{"text": "Hi "}, {"speech": {"content": [12, 873]}}]},
        {"role": "assistant", "content": [{"speech": {"content": [1], "timbre": [[3], [5], [7]]}}]},
    ],
}
EXPECTED = (
    "<|startoftext|><|im_start|>system\nBe brief.<|im_end|>\n"
    "<|im_start|>user\nHi <spch><spch12><spch873></spch><|im_end|>\n"
    "<|im_start|>assistant\n<spch><spch1><spch1027><spch2053><spch3079></spch><|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture
def conv_file(tmp_path: Path) -> Path:
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(CONV), encoding="utf-8")
    return path


def test_prints_exact_prompt(conv_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt", str(conv_file)]) == 0
    assert capsys.readouterr().out == EXPECTED


def test_no_generation_prompt(conv_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt", str(conv_file), "--no-generation-prompt"]) == 0
    assert capsys.readouterr().out == EXPECTED.removesuffix("\n<|im_start|>assistant\n")


def test_ids_with_the_embedded_tokenizer(conv_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt", str(conv_file), "--ids"]) == 0
    ids = json.loads(capsys.readouterr().out)
    # embedded layout: BOS 1, <|im_start|> 6, <|im_end|> 7, bytes at 8.., <spch> 267, </spch> 265,
    # <spchN> at 8462 + N
    assert ids[:2] == [1, 6]
    assert ids.count(1) == 1
    assert ids.count(6) == 4 and ids.count(7) == 3
    speech_ids = [i - 8462 for i in ids if i >= 8462]
    assert speech_ids == [12, 873, 1, 1027, 2053, 3079]
    text = bytes(i - 8 for i in ids if 8 <= i < 264).decode()
    assert text == "system\nBe brief.\nuser\nHi \nassistant\n\nassistant\n"


def test_bad_file_is_one_line_naming_turn_item_and_rule(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(CONV))
    bad["turns"][1]["content"][0]["speech"]["timbre"] = [[3], [5, 6], [7]]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    proc = run_cli("prompt", str(path))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "turn 1, item 0 (speech)" in lines[0] and "same length" in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_file(tmp_path: Path) -> None:
    proc = run_cli("prompt", str(tmp_path / "nope.json"))
    assert proc.returncode == 2
    assert "nope.json: cannot read" in proc.stderr


def test_the_readme_conversation_example_runs_as_pasted(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Conversation files") :]
    example = section[
        section.index("```json\n") + len("```json\n") : section.index("```", section.index("```json") + 7)
    ]
    path = tmp_path / "conv.json"
    path.write_text(example)
    proc = run_cli("prompt", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("<image>") == 1 and proc.stdout.count("<spch>") >= 2
