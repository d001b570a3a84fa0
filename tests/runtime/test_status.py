"""The status line on a pipe: one line per state change and per finished turn."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

from mio_agent.events import SessionState, TurnEnded
from mio_agent.runtime.status import StatusLine


def test_a_pipe_gets_one_line_per_state_change_and_turn() -> None:
    out = io.StringIO()
    session: Any = SimpleNamespace(state="listening")
    line = StatusLine(session, None, out)
    for state in ("listening", "hearing", "hearing", "thinking", "speaking"):
        line.feed(SessionState(session="s", turn=1, state=state))  # type: ignore[arg-type]
    line.feed(TurnEnded(session="s", turn=1, reason="completed", tokens=3))
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["turn 1 hearing", "turn 1 thinking", "turn 1 speaking"]
    assert lines[3].startswith("turn 1 completed: ") and len(lines) == 4
