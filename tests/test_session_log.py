"""SessionLog: events.jsonl and WAV files read back as written, crash leftovers, resume, flat memory."""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tracemalloc
import wave
from pathlib import Path

import pytest

from mio_agent import session_log as session_log_module
from mio_agent.events import (
    AudioIn,
    AudioOut,
    CapabilityProgress,
    ErrorEvent,
    Event,
    ImageOut,
    Interrupt,
    Metrics,
    PlaybackClear,
    SpeechCodes,
    TextDelta,
    TextIn,
    TurnEnded,
    TurnStarted,
    UserSpeechEnded,
    UserSpeechStarted,
    VideoFrame,
    event_to_dict,
)
from mio_agent.session_log import (
    EVENTS_FILE,
    SESSION_FILE,
    SessionLog,
    WavWriter,
    attach_payloads,
    read_events,
    repair_wav,
    wav_info,
)
from mio_agent.store import SessionStore, StoreError, file_sha256


def pcm(n: int, seed: int, channels: int = 1) -> bytes:
    """n frames of distinct int16 samples."""
    return bytes((seed + i) % 251 for i in range(2 * n * channels))


def session_events(sid: str) -> list[Event]:
    """A two-turn session with one event of every type (audio in two chunks)."""
    return [
        UserSpeechStarted(session=sid, turn=1, t=1.0),
        AudioIn(session=sid, turn=1, pcm=pcm(320, 1), sample_rate=16000, t=1.02),
        AudioIn(session=sid, turn=1, pcm=pcm(320, 2), sample_rate=16000, t=1.04),
        VideoFrame(session=sid, turn=1, width=2, height=2, rgb=bytes(range(12))),
        UserSpeechEnded(session=sid, turn=1, duration_s=0.04),
        TextIn(session=sid, turn=1, text='héllo\n"there"'),
        TurnStarted(session=sid, turn=1, mode="voice"),
        TextDelta(session=sid, turn=1, text="hi"),
        SpeechCodes(session=sid, turn=1, layer=0, codes=(3, 1023)),
        AudioOut(session=sid, turn=1, pcm=pcm(480, 3), sample_rate=24000, seq=0),
        AudioOut(session=sid, turn=1, pcm=pcm(240, 4), sample_rate=24000, seq=1),
        ImageOut(session=sid, turn=1, codes=tuple(range(32)), png=b"\x89PNG fake image"),
        ImageOut(session=sid, turn=1, codes=tuple(range(32))),
        Metrics(session=sid, turn=1, stage="first_audio", seconds=0.2, extra={"tokens": 3}),
        CapabilityProgress(session=sid, turn=1, name="edit", step=1, total=2),
        Interrupt(session=sid, turn=1, reason="barge-in"),
        PlaybackClear(session=sid, turn=1),
        TurnEnded(session=sid, turn=1, reason="interrupted", tokens=2),
        AudioIn(session=sid, turn=2, pcm=pcm(160, 5, channels=2), sample_rate=16000, channels=2),
        ErrorEvent(session=sid, turn=2, code="codec", message="bad"),
        AudioOut(session=sid, turn=2, pcm=pcm(100, 6), sample_rate=24000, seq=0),
    ]


def wav_frames(path: Path) -> tuple[int, int, bytes]:
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.readframes(w.getnframes())


def test_all_is_complete() -> None:
    for name in session_log_module.__all__:
        assert hasattr(session_log_module, name), name


def test_events_audio_and_images_read_back_as_written(tmp_path: Path) -> None:
    with SessionLog.start(tmp_path, mode="voice", config={"camera": 0}) as log:
        sid, folder = log.session_id, log.folder
        written = session_events(sid)
        for ev in written:
            log.write(ev)
        log.record_turn(1, "assistant", token_ids=[5, 6], reason="interrupted")
    assert folder == tmp_path / sid
    assert json.loads((folder / SESSION_FILE).read_text())["config"] == {"camera": 0}
    back = list(read_events(folder))
    frame = next(ev for ev in written if isinstance(ev, VideoFrame))
    assert back == [event_to_dict(ev) if ev is frame else ev for ev in written]  # pixels are not kept
    lines = (folder / EVENTS_FILE).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [event_to_dict(ev) for ev in written]

    assert wav_frames(folder / "user-1.wav") == (16000, 1, pcm(320, 1) + pcm(320, 2))
    assert wav_frames(folder / "assistant-1.wav") == (24000, 1, pcm(480, 3) + pcm(240, 4))
    assert wav_frames(folder / "user-2.wav") == (16000, 2, pcm(160, 5, channels=2))
    assert (folder / "image-1-0.png").read_bytes() == b"\x89PNG fake image"

    with SessionStore.open(tmp_path) as st:
        data = st.load_session(sid)
        assert [e.data for e in data.events] == [event_to_dict(ev) for ev in written]
        assert data.info.status == "closed" and data.turns[0].token_ids == (5, 6)
        media = {m.path.name: m for m in data.media}
        assert set(media) == {
            "user-1.wav",
            "assistant-1.wav",
            "user-2.wav",
            "assistant-2.wav",
            "image-1-0.png",
        }
        for m in media.values():
            assert m.sha256 == file_sha256(m.path) and m.size == m.path.stat().st_size
        assert media["assistant-1.wav"].duration_s == pytest.approx(720 / 24000)
        # the store's events, with their bytes found in the folder, are the events again
        assert list(attach_payloads((e.data for e in st.iter_events(sid)), folder))[:3] == written[:3]


def test_a_truncated_last_line_is_skipped_and_damage_elsewhere_is_reported(tmp_path: Path) -> None:
    with SessionLog.start(tmp_path, store=False) as log:
        written = [TextDelta(session=log.session_id, turn=1, text=str(i), t=float(i)) for i in range(5)]
        for ev in written:
            log.write(ev)
    events = log.folder / EVENTS_FILE
    with open(events, "ab") as f:
        f.write(b'{"type":"text.delta","session":"')  # the process died here
    assert list(read_events(events)) == written

    # resuming drops the cut line, so new lines start clean
    with SessionLog.resume(tmp_path, log.session_id, store=False) as again:
        again.write(TextDelta(session=log.session_id, turn=2, text="resumed", t=9.0))
    assert [ev.text for ev in read_events(log.folder) if isinstance(ev, TextDelta)] == [
        "0", "1", "2", "3", "4", "resumed"
    ]  # fmt: skip

    lines = events.read_bytes().splitlines(keepends=True)
    events.write_bytes(b"".join([*lines[:2], b"{not json\n", *lines[2:]]))
    with pytest.raises(StoreError, match="line 3"):
        list(read_events(log.folder))


def test_unknown_types_stay_dicts(tmp_path: Path) -> None:
    events = tmp_path / EVENTS_FILE
    future = {"type": "hologram.out", "session": "s", "turn": 1, "t": 0.0, "voxels": 3}
    events.write_text(
        json.dumps(future) + "\n" + json.dumps(event_to_dict(TextIn(session="s", turn=1, text="x")))
    )
    back = list(read_events(tmp_path))
    assert back[0] == future and isinstance(back[1], TextIn)


def test_a_wav_left_open_by_a_crash_is_repaired(tmp_path: Path) -> None:
    path, crashed = tmp_path / "live.wav", tmp_path / "crashed.wav"
    writer = WavWriter(path, sample_rate=16000, channels=2)
    writer.write(pcm(100, 1, channels=2))
    writer.write(pcm(50, 2, channels=2))
    shutil.copyfile(path, crashed)  # what a killed process leaves: samples on disk, sizes still 0
    writer.close()
    with open(crashed, "ab") as f:
        f.write(b"\x01")  # half a sample of a cut write
    info = wav_info(crashed)
    assert not info.complete and info.frames == 150
    assert repair_wav(crashed) is True
    assert wav_info(crashed).complete and crashed.read_bytes() == path.read_bytes()
    assert wav_frames(crashed) == (16000, 2, pcm(100, 1, channels=2) + pcm(50, 2, channels=2))
    assert repair_wav(crashed) is False
    (tmp_path / "not.wav").write_bytes(b"ID3 mp3 data")
    with pytest.raises(StoreError, match="not a WAV"):
        repair_wav(tmp_path / "not.wav")


def test_wav_files_are_appended_to_and_formats_kept_apart(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    for seed in (1, 2):
        w = WavWriter(path, sample_rate=8000)
        w.write(pcm(10, seed))
        w.close()
    assert wav_frames(path) == (8000, 1, pcm(10, 1) + pcm(10, 2))
    with pytest.raises(StoreError, match="8000 Hz"):
        WavWriter(path, sample_rate=16000)

    with SessionLog.start(tmp_path / "sessions", store=False) as log:
        sid = log.session_id
        written = [
            AudioIn(session=sid, turn=1, pcm=pcm(10, 1), sample_rate=16000),
            AudioIn(session=sid, turn=1, pcm=pcm(10, 2), sample_rate=48000),  # a device switch mid-turn
            AudioIn(session=sid, turn=1, pcm=pcm(10, 3), sample_rate=16000),
        ]
        for ev in written:
            log.write(ev)
    assert wav_frames(log.folder / "user-1.wav") == (16000, 1, pcm(10, 1) + pcm(10, 3))
    assert wav_frames(log.folder / "user-1.1.wav") == (48000, 1, pcm(10, 2))
    assert list(read_events(log.folder)) == written


def test_files_only_log_in_the_default_session_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    with SessionLog.start(store=False) as log:
        log.write(TextIn(session=log.session_id, turn=0, text="x"))
        log.record_turn(0, "user", token_ids=[1])  # no store: nothing to do
        with pytest.raises(StoreError, match="belongs to session 'other'"):
            log.write(TextIn(session="other", turn=0, text="x"))
    assert log.folder.parent == tmp_path / "data" / "mio-agent" / "sessions"
    assert not (log.folder.parent / "sessions.sqlite3").exists()
    with pytest.raises(StoreError, match="closed"):
        log.write(TextIn(session=log.session_id, turn=0, text="late"))
    with pytest.raises(StoreError, match="no session folder"):
        SessionLog.resume(tmp_path, "missing", store=False)


def test_memory_stays_flat_over_20000_events(tmp_path: Path) -> None:
    def event(sid: str, i: int) -> Event:
        turn = i // 2000
        if i % 4 == 0:
            return AudioIn(session=sid, turn=turn, pcm=bytes(640), sample_rate=16000)
        if i % 4 == 1:
            return AudioOut(session=sid, turn=turn, pcm=bytes(960), sample_rate=24000, seq=i)
        if i % 4 == 2:
            return Metrics(session=sid, turn=turn, stage="decode", seconds=0.001, extra={"i": i})
        return TextDelta(session=sid, turn=turn, text=f"token {i}")

    tracemalloc.start()
    try:
        with SessionLog.start(tmp_path) as log:
            for i in range(2000):
                log.write(event(log.session_id, i))
            log.flush()
            gc.collect()
            warm = tracemalloc.get_traced_memory()[0]
            for i in range(2000, 20000):
                log.write(event(log.session_id, i))
            log.flush()
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - warm
    finally:
        tracemalloc.stop()
    # a leak of even 10 bytes an event would show as 180 kB
    assert grown < 100_000, grown
    assert sum(1 for _ in read_events(log.folder, payloads=False)) == 20000


_CHILD = """
import sys
from mio_agent.events import AudioIn, TextDelta
from mio_agent.session_log import SessionLog

log = SessionLog.resume(sys.argv[1], sys.argv[2])
i = 0
while True:
    for _ in range(20):
        turn = 1 + i // 200
        if i % 2:
            log.write(TextDelta(session=log.session_id, turn=turn, text=f"e{i}", t=float(i)))
        else:
            pcm = bytes([i % 256, 0]) * 160
            log.write(AudioIn(session=log.session_id, turn=turn, pcm=pcm, sample_rate=16000, t=float(i)))
        i += 1
    log.flush()
    print(i, flush=True)
"""


def expected(sid: str, i: int) -> Event:
    turn = 1 + i // 200
    if i % 2:
        return TextDelta(session=sid, turn=turn, text=f"e{i}", t=float(i))
    return AudioIn(session=sid, turn=turn, pcm=bytes([i % 256, 0]) * 160, sample_rate=16000, t=float(i))


def test_a_killed_writer_leaves_a_readable_resumable_session(tmp_path: Path) -> None:
    log = SessionLog.start(tmp_path)
    sid = log.session_id
    log.close()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), sid], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        flushed = 0
        while flushed < 300:  # past one turn, so one WAV is finished and one is open
            line = child.stdout.readline()
            assert line, "the writer process ended early"
            flushed = int(line)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    folder = tmp_path / sid
    back = list(read_events(folder))  # audio read from a WAV whose header was never finished
    assert len(back) >= flushed
    assert back == [expected(sid, i) for i in range(len(back))]
    open_wav = folder / "user-2.wav"
    assert not wav_info(open_wav).complete and wav_info(folder / "user-1.wav").complete
    assert repair_wav(open_wav)
    rate, _, samples = wav_frames(open_wav)
    assert rate == 16000 and len(samples) >= 320 * ((flushed - 200) // 2)

    with SessionStore.open(tmp_path) as st:
        stored = st.load_session(sid).events
    assert len(stored) >= flushed
    assert [e.data for e in stored[:flushed]] == [event_to_dict(expected(sid, i)) for i in range(flushed)]

    with SessionLog.resume(tmp_path, sid) as log:
        log.write(TextDelta(session=sid, turn=9, text="after", t=1e6))
    assert list(read_events(folder))[-1] == TextDelta(session=sid, turn=9, text="after", t=1e6)
