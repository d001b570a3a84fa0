"""The TUI on the voice runtime of `mio-agent run`, with a file for a microphone and a file for a speaker."""

from __future__ import annotations

import wave
from pathlib import Path

from mio_agent.engine import ReplyOptions
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.tui.app import MioApp
from mio_agent.tui.backend import Backend
from mio_agent.tui.launch import AudioChoice, open_local
from mio_agent.tui.panels import LatencyPanel, MicPanel
from mio_agent.tui.turns import AssistantTurn, NoteLine, UserTurnView
from tests.tui.conftest import shown, wait_until

SHORT = ReplyOptions(max_speech_codes=40, allow_image=False, max_new_tokens=60)


def voice_app(shared: SharedResources, tmp_path: Path, mic: Path, mode: str) -> MioApp:
    audio = AudioChoice(mic_file=mic, speaker_file=tmp_path / "speaker.wav", echo_cancel=False)

    async def make() -> Backend:
        return await open_local(shared, log_root=tmp_path / "sessions", audio=audio, reply_options=SHORT)

    return MioApp(make, export_dir=tmp_path, mode=mode)


async def test_a_spoken_turn_from_the_microphone_file(
    shared: SharedResources, tmp_path: Path, spoken_wav: Path
) -> None:
    app = voice_app(shared, tmp_path, spoken_wav, "hands-free")
    loudest = -120.0
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.backend is not None)
        assert app.backend is not None and app.backend.microphone
        mic = app.query_one(MicPanel)

        def heard() -> bool:
            nonlocal loudest
            loudest = max(loudest, mic.dbfs)
            return any(w.status == "✓" for w in app.query(AssistantTurn))

        await wait_until(pilot, heard)
        [user] = app.query(UserTurnView)
        assert user.speech_s > 0.5  # the spoken turn shows its length
        assert loudest > -40  # the level meter moved with the speech
        assert "vad" in next(iter(app.query_one(LatencyPanel).turns.values()))
        # the file ended: the voice app stops once the reply has played, and the TUI says so
        await wait_until(pilot, lambda: "the session ended" in shown(app.query(NoteLine)))
    with wave.open(str(tmp_path / "speaker.wav")) as played:
        assert played.getnframes() > 0


async def test_push_to_talk_mutes_until_the_key(
    shared: SharedResources, tmp_path: Path, spoken_wav: Path
) -> None:
    app = voice_app(shared, tmp_path, spoken_wav, "push-to-talk")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.backend is not None)
        mic = app.query_one(MicPanel)
        await wait_until(pilot, lambda: mic.state == "muted")
        assert "push-to-talk" in str(mic.render())
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: mic.state != "muted")
        assert mic.talking
        await pilot.press("ctrl+t")  # release: silence ends what was said, the microphone is muted again
        await wait_until(pilot, lambda: mic.state == "muted" or any(app.query(UserTurnView)))
        assert not mic.talking
        await pilot.press("f2")
        await wait_until(pilot, lambda: app.mode == "hands-free" and mic.state != "muted")
