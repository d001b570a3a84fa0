"""The TUI starts and answers in a real terminal (tmux), not only under Textual's test driver."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


def test_the_tui_answers_a_typed_turn_in_tmux(tmp_path: Path) -> None:
    assert TMUX is not None
    name = f"mio-tui-{tmp_path.name}"[:40]
    command = f"{sys.executable} -m mio_agent.cli.main tui --no-audio --session-dir {tmp_path} --export-dir {tmp_path}"
    subprocess.run([TMUX, "new-session", "-d", "-s", name, "-x", "100", "-y", "30", command], check=True)
    try:

        def screen() -> str:
            return subprocess.run(
                [TMUX, "capture-pane", "-t", name, "-p"], capture_output=True, text=True
            ).stdout

        deadline = time.monotonic() + 90
        while "state: listening" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.5)
        subprocess.run([TMUX, "send-keys", "-t", name, "hello from a terminal", "Enter"], check=True)
        while "✓" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.5)
        assert "you  hello from a terminal" in screen()
        subprocess.run([TMUX, "send-keys", "-t", name, "C-q"], check=True)
        time.sleep(2)
        # the session was logged and closed
        (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
        assert '"type":"turn.ended"' in (folder / "events.jsonl").read_text()
    finally:
        subprocess.run([TMUX, "kill-session", "-t", name], capture_output=True)
