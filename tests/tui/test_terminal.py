"""The TUI starts and answers in a real terminal (tmux), not only under Textual's test driver."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
# bounds that only turn a hang into a failure (the app loads the embedded model first)
START_S = 120.0
HANG_S = 60.0


def test_the_tui_answers_a_typed_turn_in_tmux(tmp_path: Path) -> None:
    if TMUX is None:
        pytest.fail("tmux is not installed: apt-get install tmux (scripts/setup.sh installs it)")
    name = f"mio-tui-{tmp_path.name}"[:40]
    # a tmux server of its own (-L): nothing of the user's tmux is seen or touched
    tmux = [TMUX, "-L", name]
    command = f"{sys.executable} -m mio_agent.cli.main tui --no-audio --session-dir {tmp_path} --export-dir {tmp_path}"
    subprocess.run([*tmux, "new-session", "-d", "-s", name, "-x", "100", "-y", "30", command], check=True)

    def screen() -> str:
        return subprocess.run(
            [*tmux, "capture-pane", "-t", name, "-p"], capture_output=True, text=True
        ).stdout

    def running() -> bool:
        return subprocess.run([*tmux, "has-session", "-t", name], capture_output=True).returncode == 0

    def wait_for_text(text: str, timeout: float) -> None:
        """Until `text` is on the pane; on the deadline (or if the app exits) fail with the pane."""
        deadline = time.monotonic() + timeout
        last = screen()
        while text not in last:
            if not running():
                raise AssertionError(f"the TUI exited before showing {text!r}; its pane was:\n{last}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear in {timeout:g} s; the pane shows:\n{last}")
            time.sleep(0.2)
            last = screen()

    try:
        wait_for_text("state: listening", START_S)
        subprocess.run([*tmux, "send-keys", "-t", name, "hello from a terminal", "Enter"], check=True)
        wait_for_text("✓", HANG_S)
        assert "you  hello from a terminal" in screen()
        subprocess.run([*tmux, "send-keys", "-t", name, "C-q"], check=True)
        # the app has quit once its pane (the only one) is gone: its session log is closed by then
        deadline = time.monotonic() + HANG_S
        while running():
            assert time.monotonic() < deadline, (
                f"the TUI did not exit in {HANG_S:g} s after ctrl+q:\n{screen()}"
            )
            time.sleep(0.2)
        (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
        assert '"type":"turn.ended"' in (folder / "events.jsonl").read_text()
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
