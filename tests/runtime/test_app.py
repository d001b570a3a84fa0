"""`mio-agent run` end to end: WAV in → WAV out, the echo path, SIGTERM, device errors and replay."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mio_agent.bus import Subscription
from mio_agent.codecs.speech import load_audio, resample
from mio_agent.config import load_config
from mio_agent.events import AudioOut, Event
from mio_agent.runtime.app import AppOptions, VoiceApp
from mio_agent.runtime.audio.loopback import EchoRoom
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.runtime.voice.session import Session
from mio_agent.session_log import read_events, wav_info
from tests.runtime.conftest import REPLY_TEXT

CLI = [sys.executable, "-m", "mio_agent.cli.main"]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "MIO_AGENT__ROUTER__TRANSCRIBE": "never", **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=full_env)


def session_folder(root: Path) -> Path:
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    return folder


def test_a_spoken_turn_goes_from_a_wav_to_a_wav(espeak: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    sessions = tmp_path / "sessions"
    p = run_cli(
        "run", "--mic-file", str(espeak("what is the time in paris")), "--speaker-file", str(out),
        "--fast", "--turns", "1", "--session-dir", str(sessions), "--no-status",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    audio, rate = load_audio(out)
    assert rate == 16000 and np.abs(audio).max() > 0.001  # the reply was played into the file
    folder = session_folder(sessions)
    kinds = [e["type"] if isinstance(e, dict) else e.type for e in read_events(folder, payloads=False)]
    for expected in ("user.speech.started", "user.speech.ended", "turn.started", "audio.out", "turn.ended"):
        assert expected in kinds
    assert wav_info(folder / "user-1.wav").duration_s > 1.0
    assert wav_info(folder / "assistant-1.wav").duration_s > 0.0
    status = json.loads((folder / "session.json").read_text())
    assert status["id"] == folder.name


def test_replay_reproduces_a_recorded_session(espeak: Callable[..., Path], tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    env = {"MIO_AGENT__ENGINE__SEED": "5"}
    p = run_cli(
        "run", "--mic-file", str(espeak("tell me something nice")), "--speaker-file", str(tmp_path / "o.wav"),
        "--fast", "--turns", "1", "--session-dir", str(sessions), "--no-status", env=env,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    folder = session_folder(sessions)
    r = run_cli("replay", str(folder), "--fast", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 recorded turn(s), 1 replayed" in r.stdout and "no differences" in r.stdout
    # a different seed changes the replies, which replay reports as a difference (exit 1)
    other = run_cli(
        "replay",
        str(folder),
        "--fast",
        env={"MIO_AGENT__ENGINE__SEED": "6", "MIO_AGENT__ENGINE__MAX_NEW_TOKENS": "3"},
    )
    assert other.returncode == 1 and "DIFF" in other.stdout


def test_sigterm_stops_cleanly_and_leaves_a_complete_log(espeak: Callable[..., Path], tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    speech = espeak(REPLY_TEXT)
    proc = subprocess.Popen(
        [*CLI, "run", "--mic-file", str(speech), "--speaker-file", str(tmp_path / "o.wav"),
         "--session-dir", str(sessions)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MIO_AGENT__ROUTER__TRANSCRIBE": "never"},
    )  # fmt: skip
    assert proc.stderr is not None
    # on a pipe the status line writes one line per state change: stop while the user is heard,
    # i.e. in the middle of recording the utterance (the speech lasts seconds after detection)
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if line.strip().endswith(" hearing"):
            break
    assert seen and seen[-1].strip().endswith(" hearing"), "".join(seen)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    err = "".join(seen) + err
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    folder = session_folder(sessions)
    lines = (folder / "events.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # every line whole
    types = [json.loads(line)["type"] for line in lines]
    assert "user.speech.started" in types
    info = wav_info(folder / "user-1.wav")  # header finished: its length matches the data
    assert info.complete and info.duration_s > 0.0
    for wav in folder.glob("*.wav"):
        assert wav_info(wav).complete, wav.name


def test_a_missing_device_is_one_clear_line(tmp_path: Path) -> None:
    p = run_cli(
        "run", "--input-device", "no-such-microphone-xyz", "--speaker-file", str(tmp_path / "o.wav"),
        "--session-dir", str(tmp_path), timeout=120,
    )  # fmt: skip
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    # with sound devices the message lists them; on a machine without any it says how to go on
    assert "mio-agent run: error:" in p.stderr
    assert "no-such-microphone-xyz" in p.stderr or "--mic-file IN.wav" in p.stderr


def test_fast_needs_a_mic_file() -> None:
    p = run_cli("run", "--fast", timeout=60)
    assert p.returncode == 2 and "--fast needs --mic-file" in p.stderr


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    return SharedResources.load(load_config(None, overrides={"router.transcribe": "never"}))


def _subscribed(app: VoiceApp, types: tuple[str, ...]) -> asyncio.Future[tuple[Session, Subscription]]:
    """The app's session and a subscription to `types` on its bus, made when the hub opens it: before
    the session starts, so no event of it is missed (call before `app.run()`)."""
    opened: asyncio.Future[tuple[Session, Subscription]] = asyncio.get_running_loop().create_future()

    def on_open(session: Session) -> None:
        sub = session.bus.subscribe("t", maxsize=100_000, filter=lambda e: e.type in types)
        if not opened.done():
            opened.set_result((session, sub))

    app.hub.on_open.append(on_open)
    return opened


async def _opened(
    opened: asyncio.Future[tuple[Session, Subscription]], task: asyncio.Task[int], timeout: float = 60.0
) -> tuple[Session, Subscription]:
    """Wait for the session to open; fails, rather than hangs, if `run()` ends first (with what ended it)."""
    done, _ = await asyncio.wait({opened, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if opened in done:
        return opened.result()
    if task in done:
        raise AssertionError(f"VoiceApp.run() ended (returning {task.result()}) before opening a session")
    raise AssertionError(f"VoiceApp.run() opened no session in {timeout:g} s")


def _speech_chunks(path: Path, session: str) -> list[AudioOut]:
    audio, rate = load_audio(path)
    mono = resample(audio if audio.ndim == 1 else audio[0], rate, 16000) * 0.9
    pcm = (np.clip(mono, -1, 1) * 32767).astype("<i2")
    step = 16000 // 5
    return [
        AudioOut(session=session, turn=1, pcm=pcm[i : i + step].tobytes(), sample_rate=16000, seq=k)
        for k, i in enumerate(range(0, pcm.size, step))
    ]


async def _play_reply_in_echo_room(
    shared: SharedResources, speech: Path, *, echo_cancel: bool
) -> list[Event]:
    """The app plays a spoken reply through a room whose microphone hears it back (-6 dB, 60 ms)."""
    room = EchoRoom(None, fast=True, pad_s=12.0, gain_db=-6.0, delay_ms=60.0)
    app = VoiceApp(
        shared, room.mic, room.speaker, AppOptions(echo_cancel=echo_cancel, status=False, fast=True)
    )
    opened = _subscribed(app, ("user.speech.started", "playback.clear"))
    task = asyncio.create_task(app.run())
    session, sub = await _opened(opened, task)
    for chunk in _speech_chunks(speech, session.id):
        session.bus.publish(chunk)
    await asyncio.wait_for(task, 120)
    got = []
    while sub.pending:
        got.append(await sub.get())
    return got


async def test_the_assistant_does_not_interrupt_itself_through_the_echo_path(
    shared: SharedResources, espeak: Callable[..., Path]
) -> None:
    speech = espeak(REPLY_TEXT)
    with_aec = await _play_reply_in_echo_room(shared, speech, echo_cancel=True)
    assert [e.type for e in with_aec] == []
    # the control: without echo cancellation the same room makes it hear (and stop) itself
    without = await _play_reply_in_echo_room(shared, speech, echo_cancel=False)
    assert "user.speech.started" in [e.type for e in without]


async def test_a_voice_turn_on_real_pyaudio_devices(
    shared: SharedResources, espeak: Callable[..., Path], virtual_alsa: Any
) -> None:
    """Real PyAudio streams on virtual ALSA devices: speech in at 48 kHz stereo, the reply out at 48 kHz."""
    from mio_agent.runtime.audio import MicrophoneSource, SpeakerSink
    from tests.runtime.virtual_alsa import MIC, SPEAKER

    audio, rate = load_audio(espeak("good morning, how are you today"))
    mono = resample(audio if audio.ndim == 1 else audio[0], rate, 48000)
    speech = np.concatenate([mono, np.zeros(48000 * 4, np.float32)])
    virtual_alsa.mic_signal = np.repeat((np.clip(speech, -1, 1) * 32767).astype(np.int16), 2)
    app = VoiceApp(
        shared,
        MicrophoneSource(MIC),
        SpeakerSink(SPEAKER),
        AppOptions(status=False, echo_cancel=False, turns=1),
    )
    opened = _subscribed(app, ("user.speech.ended", "turn.ended", "audio.out"))
    task = asyncio.create_task(app.run())
    _, sub = await _opened(opened, task)
    assert await asyncio.wait_for(task, 90) == 0
    events = []
    while sub.pending:
        events.append(await sub.get())
    kinds = [e.type for e in events]
    assert "user.speech.ended" in kinds and "audio.out" in kinds and kinds[-1] == "turn.ended"
    heard, _ = virtual_alsa.heard()
    assert np.abs(heard).max() > 0  # the reply came out of the (virtual) speaker
