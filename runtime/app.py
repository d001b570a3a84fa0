"""The hands-free voice app: microphone → session → speaker, with camera, echo cancellation, log and status."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from mio_agent.bus import Subscription
from mio_agent.engine import ReplyOptions
from mio_agent.events import AudioIn, AudioOut, Event, PlaybackClear, TurnEnded
from mio_agent.exceptions import SubscriptionClosed
from mio_agent.runtime.audio.base import SAMPLE_RATE, AudioSink, AudioSource
from mio_agent.runtime.report import SessionReport
from mio_agent.runtime.status import StatusLine
from mio_agent.runtime.voice.camera import CameraSource
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.playback import LocalPlayback
from mio_agent.runtime.voice.session import Session

if TYPE_CHECKING:
    from mio_agent.runtime.audio.echo import EchoCanceller
    from mio_agent.runtime.net.mqtt import MqttBridge
    from mio_agent.runtime.voice.resources import SharedResources

__all__ = ["AppOptions", "VoiceApp"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AppOptions:
    """How `mio-agent run` runs: devices, files, log folder, limits."""

    session_dir: Path | None = None
    camera: str | None = None
    fast: bool = False
    turns: int | None = None
    status: bool = True
    echo_cancel: bool = True
    session_id: str | None = None
    reply_options: ReplyOptions | None = None


class VoiceApp:
    """Wires one local session to a microphone, a speaker and maybe a camera, until stopped.

    Stops on `stop()`, SIGINT/SIGTERM, after `turns` agent turns, or when a file microphone has
    been played to its end and the last reply has finished playing. Shutting down stops playback,
    closes the devices and finishes the session log, so the log is complete.
    """

    def __init__(
        self, shared: SharedResources, mic: AudioSource, speaker: AudioSink, options: AppOptions
    ) -> None:
        self.shared = shared
        self.mic = mic
        self.speaker = speaker
        self.options = options
        self.hub = SessionHub(shared, log_root=options.session_dir)
        self.session: Session | None = None
        self.turns_done = 0
        self.exit_reason = "closed"
        self.report = SessionReport()
        # false once the turn limit is reached: the microphone is no longer heard (no new turn starts)
        self._accepting = True
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._camera: CameraSource | None = None
        self._echo: EchoCanceller | None = None
        self._bridge: MqttBridge | None = None
        self._started = False

    def stop(self, reason: str = "stopped") -> None:
        self.exit_reason = reason
        self._stop.set()

    async def run(self) -> int:
        """Run until stopped; the exit status (0: a normal end)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop, signal.Signals(sig).name)
        try:
            await self.mic.start()
            await self.speaker.start()
            session = self.session = await self.hub.open(
                self.options.session_id,
                playback=LocalPlayback(self.speaker),
                reply_options=self.options.reply_options,
            )
            if self.options.echo_cancel:
                self._echo = _make_echo(self.speaker)
            if self.shared.config.mqtt.enabled:
                from mio_agent.runtime.net.mqtt import MqttBridge

                self._bridge = MqttBridge(self.shared.config.mqtt, self.hub)
                await self._bridge.start()
            if self.options.camera is not None:
                self._camera = CameraSource(
                    self.options.camera,
                    session=session.id,
                    fps=self.shared.config.camera.fps,
                    fast=self.options.fast,
                )
                self._camera.start(session.submit)
            speaker_sub = session.bus.subscribe(
                "speaker", maxsize=4096, policy="block", filter=lambda e: e.type in _SPEAKER_EVENTS
            )
            self._tasks = [
                asyncio.create_task(self._play(speaker_sub), name="speaker"),
                asyncio.create_task(self._listen(session), name="microphone"),
                asyncio.create_task(self._count_turns(session), name="turns"),
            ]
            await self.shared.plugins.startup(self)
            self._started = True
            if self.options.status:
                status = StatusLine(session, self.speaker, sys.stderr)
                self._tasks.append(asyncio.create_task(status.run(), name="status"))
            await self._stop.wait()
        finally:
            await self._shutdown()
        return 0

    async def _shutdown(self) -> None:
        self.speaker.clear()
        if self._started:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10.0):
                    await self.shared.plugins.shutdown(self)
        if self._camera is not None:
            self._camera.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._bridge is not None:
            await self._bridge.aclose()
        status = "interrupted" if self.exit_reason in ("SIGINT", "SIGTERM") else "closed"
        await self.hub.aclose(status)
        with contextlib.suppress(Exception):
            await self.mic.close()
        with contextlib.suppress(Exception):
            await self.speaker.close()
        if self._echo is not None:
            self._echo.close()

    async def _listen(self, session: Session) -> None:
        # the stop flag too, not only the cancel: a lost cancellation must not keep the app reading
        while not self._stop.is_set():
            frame = await self.mic.read()
            if frame is None:
                break
            if not self._accepting:
                continue
            samples = frame.samples
            if self._echo is not None:
                result = self._echo.process(frame)
                # echo alone must look like silence to the voice detector
                samples = result.frame.samples if result.near_end else np.zeros_like(samples)
            session.submit(
                AudioIn(
                    session=session.id,
                    turn=0,
                    t=frame.t,
                    pcm=samples.astype("<i2").tobytes(),
                    sample_rate=SAMPLE_RATE,
                )
            )
        if self._stop.is_set():
            return
        # a file microphone ended: let the last reply finish playing, then stop
        await session.idle()
        # a simulated room advances its clock only while its microphone is read: never wait forever
        await self.speaker.drain(timeout=self.speaker.buffered_ms / 1000.0 + 2.0)
        self.stop("the input file ended")

    async def _play(self, sub: Subscription) -> None:
        while True:
            try:
                ev = await sub.get()
            except SubscriptionClosed:
                return
            if isinstance(ev, PlaybackClear):
                # control events jump the queue: audio of the cleared turn still queued must not play
                sub.discard(functools.partial(_stale_audio, ev.turn))
                self.speaker.clear()
            elif isinstance(ev, AudioOut):
                await self.speaker.play(ev.pcm, ev.sample_rate, turn=ev.turn)
            elif isinstance(ev, TurnEnded):
                self.speaker.end_turn(ev.turn)

    async def _count_turns(self, session: Session) -> None:
        sub = session.bus.subscribe(
            "turn-counter", maxsize=4096, policy="block", filter=lambda e: e.type in _REPORTED
        )
        limit = self.options.turns
        async for ev in sub:
            self.report.feed(ev)
            if ev.type != "turn.ended":
                continue
            self.turns_done += 1
            if limit is not None and self.turns_done >= limit:
                self._accepting = False
                await self.speaker.drain(timeout=30.0)
                self.stop(f"stopped after {limit} turn{'s' if limit != 1 else ''} (--turns)")
                return


def _stale_audio(cleared: int, ev: Event) -> bool:
    return isinstance(ev, AudioOut) and ev.turn <= cleared


_SPEAKER_EVENTS = frozenset({"audio.out", "playback.clear", "turn.ended"})
_REPORTED = frozenset(
    {"user.turn", "user.transcript", "text.delta", "audio.out", "metrics", "error", "turn.ended"}
)


def _make_echo(speaker: AudioSink) -> EchoCanceller | None:
    from mio_agent.runtime.audio.echo import EchoCanceller, speexdsp_available

    if not speexdsp_available():
        log.warning("echo cancellation is off: libspeexdsp is not installed (apt install libspeexdsp1)")
        return None
    return EchoCanceller(speaker.reference)


def print_summary(app: VoiceApp, out: TextIO, files: dict[str, Path] | None = None) -> None:
    """What the session did, in plain words: each turn (heard, answered, latency by stage) and
    where its files are; with the embedded model, what its replies sound like."""
    session = app.session
    if session is None:
        return
    reason = {"SIGINT": "stopped by Ctrl-C", "SIGTERM": "stopped by SIGTERM"}.get(
        app.exit_reason, app.exit_reason
    )
    app.report.write(
        out,
        session=session.id,
        why=reason,
        folder=app.options.session_dir / session.id if app.options.session_dir else None,
        embedded=app.shared.embedded,
        files=files,
    )
