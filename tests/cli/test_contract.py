"""The README's contract of every command: no library warnings on the terminal."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import run_cli


def test_generating_commands_print_no_library_warnings(tmp_path: Path) -> None:
    runs = [
        run_cli("chat", "--text", "hi", "--mode", "std", "--max-new-tokens", "4", "--out-dir", str(tmp_path)),
        run_cli(
            "chat", "--text", "hi", "--mode", "voice", "--max-new-tokens", "40", "--out-dir", str(tmp_path)
        ),
        run_cli("invoke", "speak", "--text", "hello", "--out", str(tmp_path)),
    ]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
        for line in proc.stderr.splitlines():
            assert "Warning" not in line and "warn(" not in line, proc.stderr
