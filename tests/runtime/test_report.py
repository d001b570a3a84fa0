"""The plain-words summary `mio-agent run` prints at the end of a session."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from mio_agent.events import AudioOut, ErrorEvent, Metrics, TextDelta, Transcript, TurnEnded, UserTurn
from mio_agent.runtime.report import EMBEDDED_SOUND_NOTE, SessionReport
from tests.runtime.test_app import run_cli


def test_each_finished_turn_says_what_was_heard_answered_and_how_fast() -> None:
    report = SessionReport()
    for ev in (
        UserTurn(session="s", turn=1, speech_s=2.5),
        Transcript(session="s", turn=1, text="what time is it"),
        Metrics(session="s", turn=1, stage="vad", seconds=0.6),
        Metrics(session="s", turn=1, stage="first_audio", seconds=0.25),
        AudioOut(session="s", turn=1, pcm=b"\0\0" * 8000, sample_rate=16000, seq=0),
        TurnEnded(session="s", turn=1, reason="completed", tokens=4),
        UserTurn(session="s", turn=2, text="hello"),
        TextDelta(session="s", turn=2, text="hi there"),
        ErrorEvent(session="s", turn=2, code="x", message="the speaker went away"),
        TurnEnded(session="s", turn=2, reason="interrupted", tokens=2),
        UserTurn(session="s", turn=3, speech_s=0.4),  # never finished: not reported
    ):
        report.feed(ev)
    out = io.StringIO()
    report.write(out, session="s", why="stopped by Ctrl-C", folder=Path("/logs/s"), embedded=True)
    text = out.getvalue()
    assert "session s: 2 turns, stopped by Ctrl-C" in text
    assert "turn 1: heard 2.5 s of speech: 'what time is it'; answered 0.50 s of speech (completed)" in text
    assert "latency: vad 600 ms, first audio 250 ms" in text
    assert "turn 2: you typed 'hello'; answered 'hi there' (interrupted)" in text
    assert "error: the speaker went away" in text and "turn 3" not in text
    assert "session log: /logs/s" in text and EMBEDDED_SOUND_NOTE in text


def test_run_ends_with_the_summary(espeak: Callable[..., Path], tmp_path: Path) -> None:
    p = run_cli(
        "run", "--mic-file", str(espeak("what is the time in paris")), "--speaker-file", str(tmp_path / "o.wav"),
        "--fast", "--turns", "1", "--session-dir", str(tmp_path / "s"), "--no-status",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "1 turn, stopped after 1 turn (--turns)" in p.stderr
    assert "turn 1: heard" in p.stderr and "latency:" in p.stderr and "session log:" in p.stderr
    assert "random weights" in p.stderr


def test_microphone_audio_after_the_last_turn_is_named_as_such(tmp_path: Path) -> None:
    report = SessionReport()
    for ev in (
        UserTurn(session="s", turn=1, speech_s=1.0),
        TurnEnded(session="s", turn=1, reason="completed", tokens=4),
    ):
        report.feed(ev)
    for name in ("user-1.wav", "user-2.wav", "user-2.1.wav", "assistant-1.wav", "user-x.wav"):
        (tmp_path / name).write_bytes(b"")
    out = io.StringIO()
    report.write(out, session="s", why="done", folder=tmp_path, embedded=False)
    tail = [line.strip() for line in out.getvalue().splitlines() if "after the last turn" in line]
    assert tail == [
        "user-2.1.wav: microphone audio after the last turn (no turn began in it)",
        "user-2.wav: microphone audio after the last turn (no turn began in it)",
    ]
