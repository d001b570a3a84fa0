"""The runtime's commands as a user runs them, in real subprocesses: `devices`, `serve` with a token,
`run --resume`, `tokenize video --max-frames` and smoke runs of `bench voice` / `bench transport`."""

from __future__ import annotations

import asyncio
import json
import math
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mio_agent.session_log import read_events
from mio_agent.store import SessionStore

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mio_agent.cli.main"]


def cli(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # the environment is read now: cli_cache (tests/cli/conftest.py) set MIO_AGENT_CACHE for this session
    full = {**os.environ, "MIO_AGENT__ROUTER__TRANSCRIBE": "never", **(env or {})}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False, env=full
    )


# -- devices ----------------------------------------------------------------------------------


def _sections(listing: str) -> dict[str, list[str]]:
    """The device lines under each heading of `mio-agent devices`."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            current = out.setdefault(line[:-1], [])
        elif line.startswith("  ") and current is not None:
            current.append(line.strip())
        elif not line.strip():
            current = None
    return out


def test_devices_says_clearly_that_there_are_none(tmp_path: Path) -> None:
    pytest.importorskip("pyaudio", reason="PyAudio is not installed")
    # ALSA with its own configuration only: no card, no plugin devices
    proc = cli("devices", env={"ALSA_CONFIG_PATH": "/usr/share/alsa/alsa.conf", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    sections = _sections(proc.stdout)
    assert sections == {
        "Input devices (microphones)": ["(none)"],
        "Output devices (speakers)": ["(none)"],
    }, proc.stdout
    assert "--input-device / --output-device" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_devices_lists_the_microphone_and_the_speaker(tmp_path: Path) -> None:
    pytest.importorskip("pyaudio", reason="PyAudio is not installed")
    if not Path("/usr/share/alsa/alsa.conf").is_file():
        pytest.skip("ALSA is not installed (Debian: apt-get install libasound2 alsa-utils)")
    from tests.runtime.virtual_alsa import MIC, SPEAKER, VirtualAlsa

    alsa = VirtualAlsa(tmp_path, mic_rate=48000, mic_channels=2, speaker_rate=48000)
    try:
        proc = cli("devices", env={"ALSA_CONFIG_PATH": alsa.alsa_config_path})
    finally:
        alsa.close()
    assert proc.returncode == 0, proc.stderr
    sections = _sections(proc.stdout)
    inputs, outputs = sections["Input devices (microphones)"], sections["Output devices (speakers)"]
    assert [line for line in inputs if MIC in line], proc.stdout
    assert [line for line in outputs if SPEAKER in line], proc.stdout
    # each line: the index that --input-device / --output-device take, the name, API, channels, rate
    (mic,) = [line for line in inputs if MIC in line]
    assert re.fullmatch(rf"\[\d+\] {MIC} \(ALSA; \d+ in.*; \d+ Hz.*\)", mic), mic


# -- serve ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`mio-agent serve` in a subprocess; its output lines are collected as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "MIO_AGENT__ROUTER__TRANSCRIBE": "never"},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_line(self, pattern: str, timeout: float = 180) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"the server never printed {pattern!r}; it printed: {self.seen}"
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"the server exited ({self.proc.wait()}) before {pattern!r}: {self.seen}"
                )
            self.seen.append(line)
            if m := re.search(pattern, line):
                return m

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the server did not stop on SIGTERM; it printed: {self.seen}") from None


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    port = free_port()
    server = Server("--token", "s3cret", "--host", "127.0.0.1", "--port", str(port), "--no-log")
    try:
        m = server.wait_for_line(r"mio-agent serve: (ws://\S+)")
        yield server, m.group(1)
    finally:
        server.stop()
    assert m.group(1) == f"ws://127.0.0.1:{port}/ws"


async def _hello(url: str, **fields: Any) -> tuple[list[dict[str, Any]], int | None]:
    """Say hello as docs/protocol.md says; every JSON message until the server closes or welcomes,
    and the close code (None if still open)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    got: list[dict[str, Any]] = []
    async with connect(url, open_timeout=30) as ws:
        await ws.send(json.dumps({"type": "hello", "protocol": 1, "client": "test 1.0", **fields}))
        try:
            async with asyncio.timeout(30):
                while True:
                    msg = json.loads(await ws.recv())
                    got.append(msg)
                    if msg["type"] == "welcome":
                        return got, None
        except ConnectionClosed as closed:
            return got, closed.rcvd.code if closed.rcvd is not None else None
    raise AssertionError("unreachable")  # pragma: no cover


def test_serve_refuses_a_client_without_the_token_and_welcomes_one_with_it(
    served: tuple[Server, str],
) -> None:
    server, url = served
    for fields in ({}, {"token": "wrong"}):
        got, code = asyncio.run(_hello(url, **fields))
        assert code == 4001, (fields, got)
        assert [(m["type"], m["code"], m["fatal"]) for m in got] == [("error", "auth.token", True)], got
    got, code = asyncio.run(_hello(url, token="s3cret", mode="voice"))
    assert code is None
    (welcome,) = got
    assert welcome["protocol"] == 1 and welcome["resumed"] is False and welcome["session"]
    assert welcome["audio_out"] == {"format": "pcm16", "sample_rate": 16000, "channels": 1}
    names = {c["name"] for c in welcome["capabilities"]}
    assert {"generate_image", "speak", "transcribe"} <= names
    assert server.proc.poll() is None  # refusing clients did not stop it
    assert server.stop() == 0


# -- run --resume -------------------------------------------------------------------------------


def _turn_events(folder: Path) -> list[Any]:
    return [ev for ev in read_events(folder, payloads=False) if not isinstance(ev, dict)]


def _prefill_tokens(events: list[Any], turn: int) -> int:
    (m,) = [e for e in events if e.type == "metrics" and e.stage == "prefill" and e.turn == turn]
    return int(m.extra["tokens"])


def _stored(root: Path, sid: str) -> list[tuple[str, tuple[Any, ...]]]:
    with SessionStore.open(root / "sessions.sqlite3") as store:
        return [(t.role, t.parts) for t in store.load_session(sid, events=False).turns]


def test_run_resume_continues_the_session_and_the_model_remembers(speech_wav: Path, tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    common = [
        "--mic-file",
        str(speech_wav),
        "--fast",
        "--turns",
        "1",
        "--session-dir",
        str(root),
        "--no-status",
    ]
    first = cli("run", *common, "--speaker-file", str(tmp_path / "o1.wav"))
    assert first.returncode == 0, first.stderr
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    sid = folder.name
    assert f"session {sid}" in first.stderr
    before = _turn_events(folder)
    assert [e.turn for e in before if e.type == "turn.ended"] == [1]
    exchange = _stored(root, sid)
    assert [role for role, _ in exchange] == ["user", "assistant"]

    second = cli("run", *common, "--speaker-file", str(tmp_path / "o2.wav"), "--resume", sid)
    assert second.returncode == 0, second.stderr
    # the same folder goes on: no new session, the first run's events kept in front
    assert [p for p in root.iterdir() if p.is_dir()] == [folder]
    after = _turn_events(folder)
    assert [(e.type, e.turn) for e in after[: len(before)]] == [(e.type, e.turn) for e in before]
    new = after[len(before) :]
    assert [e.turn for e in new if e.type == "turn.ended"] == [2]
    assert min(e.turn for e in new if e.type in ("user.turn", "turn.started", "turn.ended")) == 2
    # the model got the first exchange back: it is stored first, and the second turn's prompt
    # held it (the same spoken turn, so without the history both prompts would be equal)
    stored = _stored(root, sid)
    assert [role for role, _ in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[:2] == exchange
    user_codes = sum(len(p.content) for p in exchange[0][1])
    reply_codes = sum(len(p.content) for p in exchange[1][1])
    assert user_codes > 0 and reply_codes > 0
    assert _prefill_tokens(new, 2) >= _prefill_tokens(before, 1) + user_codes + reply_codes


# -- tokenize video -------------------------------------------------------------------------------


SCENES = [20, 40, 25, 50, 30]
"""Frames of each scene of the test video (10 fps; all longer than the 15-frame minimum)."""
MIDDLES = [10, 40, 72, 110, 150]
"""The middle frame of each scene: its keyframe."""


def _video(path: Path, scene_lengths: list[int]) -> Path:
    cv2 = pytest.importorskip("cv2", reason="video keyframes need opencv-python-headless")
    colours = [(20, 20, 200), (230, 230, 40), (90, 30, 90), (30, 200, 30), (250, 250, 250)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for colour, n in zip(colours, scene_lengths, strict=False):
        for i in range(n):
            frame = np.full((48, 64, 3), colour, dtype=np.uint8)
            frame[20:28, (3 * i) % 56 : (3 * i) % 56 + 8] = 128  # a little motion inside the scene
            writer.write(frame)
    writer.release()
    return path


def test_tokenize_video_keeps_at_most_max_frames_keyframes(tmp_path: Path) -> None:
    video = _video(tmp_path / "five.avi", SCENES)
    everything = cli("tokenize", "video", str(video), "--json")
    assert everything.returncode == 0, everything.stderr
    all_frames = json.loads(everything.stdout)["keyframes"]
    assert [f["index"] for f in all_frames] == MIDDLES
    by_index = {f["index"]: f for f in all_frames}
    for n in (1, 2, 4):
        proc = cli("tokenize", "video", str(video), "--max-frames", str(n), "--json")
        assert proc.returncode == 0, proc.stderr
        frames = json.loads(proc.stdout)["keyframes"]
        assert len(frames) == n <= 5
        # the longest scenes are kept, in time order, with the codes of the same frames
        longest = sorted(middle for _, middle in sorted(zip(SCENES, MIDDLES, strict=True), reverse=True)[:n])
        assert [f["index"] for f in frames] == longest
        assert all(f == by_index[f["index"]] and len(f["codes"]) == 32 for f in frames)
    proc = cli("tokenize", "video", str(video), "--max-frames", "2")
    assert proc.returncode == 0 and f"{video}: 2 keyframes" in proc.stderr
    assert len(json.loads(proc.stdout)["keyframes"]) == 2


# -- bench ----------------------------------------------------------------------------------------


def _documented_keys(section: str) -> set[str]:
    """The keys of the JSON line bench/README.md shows under `## \\`bench <section>\\``."""
    text = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## `bench {section}`")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    m = re.search(r"```json\n(.*?)\n```", body, re.S)
    assert m, f"bench/README.md shows no JSON line for bench {section}"
    return set(json.loads(m.group(1)))


def _figures(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"--json prints one line, not {len(lines)}: {stdout[-2000:]}"
    figures: dict[str, Any] = json.loads(lines[0])
    for key, value in figures.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            assert math.isfinite(value), f"{key} = {value}"
    return figures


@pytest.mark.timeout(900)
@pytest.mark.parametrize("what", ["voice", "transport"])
def test_bench_quick_prints_the_documented_figures(what: str) -> None:
    proc = cli("bench", what, "--quick", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = _figures(proc.stdout)
    missing = _documented_keys(what) - set(figures)
    assert not missing, f"bench {what} lacks the documented {sorted(missing)}"
    assert figures["bench"] == what
    numbers = {k: v for k, v in figures.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    assert all(v >= 0 for v in numbers.values()), numbers
    if what == "voice":
        assert figures["latency_turns"] > 0 and figures["first_audio_p50_ms"] > 0
    else:
        assert figures["clients"] > 0 and figures["events"] > 0
