"""The status line on a pipe: one line per state change and per finished turn."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

from mio_agent.events import Metrics, SessionState, TurnEnded
from mio_agent.runtime.status import StatusLine


def test_a_pipe_gets_one_line_per_state_change_and_turn() -> None:
    out = io.StringIO()
    session: Any = SimpleNamespace(state="listening")
    line = StatusLine(session, None, out)
    for state in ("listening", "hearing", "hearing", "thinking", "speaking"):
        line.feed(SessionState(session="s", turn=1, state=state))  # type: ignore[arg-type]
    line.feed(Metrics(session="s", turn=1, stage="first_audio", seconds=0.25, extra={"engine_s": 0.1}))
    line.feed(TurnEnded(session="s", turn=1, reason="completed", tokens=3))
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["turn 1 hearing", "turn 1 thinking", "turn 1 speaking"]
    # the turn's line has its own figures, not the live state
    assert lines[3] == "turn 1 completed: first audio 250 ms (vad 0, engine 100, overhead 0)"
    assert len(lines) == 4
