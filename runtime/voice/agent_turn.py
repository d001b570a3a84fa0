"""One agent turn: a model reply or a capability run, streamed as output events and interruptible."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mio_agent.capability import Capability, CapabilityContext
from mio_agent.capability_runner import run_capability
from mio_agent.conversation import Part, Turn
from mio_agent.engine import ConversationEngine, ReplyOptions, ReplyStream
from mio_agent.events import (
    AudioOut,
    EndReason,
    ErrorEvent,
    Event,
    ImageOut,
    Metrics,
    OutputEvent,
    SpeechCodes,
    TextDelta,
    TurnEnded,
    TurnStarted,
)
from mio_agent.parser import ImageBlock, Malformed, SpeechBlock, SpeechContent, Truncated
from mio_agent.parser import TextDelta as ParsedText
from mio_agent.runtime.voice.playback import PlaybackControl, heard_parts
from mio_agent.runtime.voice.speech_out import SpeechOut

if TYPE_CHECKING:
    from mio_agent.runtime.voice.resources import SharedResources

__all__ = ["AgentTurn", "TurnInputTimes"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TurnInputTimes:
    """When the user's input ended and what it cost before the agent could start (for metrics)."""

    ended_at: float
    """`time.monotonic()` when the session knew the input was complete (end of speech detected, text received)."""
    vad_s: float | None = None
    encode_s: float = 0.0
    transcribe_s: float = 0.0


class AgentTurn:
    """Runs turn `turn` of a session and publishes its events; `interrupt()` stops it for good.

    After an interruption nothing more of the turn is published: playback was cleared, the
    reply stopped between two decode steps, and the conversation keeps only what was heard.
    """

    def __init__(
        self,
        shared: SharedResources,
        *,
        session: str,
        turn: int,
        publish: Callable[[Event], None],
        playback: PlaybackControl,
        executor: Executor,
        voice: bool = False,
        room: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.shared = shared
        # awaited between reply events: a "block" consumer that fell behind holds the reply back
        self._room = room
        self.session = session
        self.turn = turn
        self._publish_now = publish
        # while the route of the turn is not known yet, what the reply makes waits here
        self._held: list[Event] | None = None
        self._pending_end: tuple[int, TurnInputTimes, float] | None = None
        self._released_at = 0.0
        self.speculative = False
        self.discarded = False
        self._playback = playback
        self._executor = executor
        self.interrupted = False
        self.replied = False
        """Whether this turn was a reply of the session's own conversation (not a capability)."""
        self.voice = voice
        self.reason: EndReason = "completed"
        self.task: asyncio.Task[None] | None = None
        self._stream: ReplyStream | None = None
        self._engine_wait_s = 0.0
        self._first_token_at: float | None = None
        self._engine_wait_s_at_first_audio = 0.0
        self._decode_s_at_first_audio = 0.0
        self._engine: ConversationEngine | None = None
        self._parts: tuple[Part, ...] | None = None
        self.speech = SpeechOut(shared.speech, executor, session=session, turn=turn, emit=self._emit_audio)

    # -- publishing -------------------------------------------------------------------------
    def _publish(self, ev: Event) -> None:
        if self.discarded:
            return
        if self._held is not None:
            self._held.append(ev)
            return
        self._out(ev)

    def _out(self, ev: Event) -> None:
        self._publish_now(ev)
        if isinstance(ev, AudioOut):
            self._playback.produced(self.turn, ev.duration_s * 1000.0)

    def hold(self) -> None:
        """Start the reply before its route is known (speculatively): keep its events until
        `release()` (the reply it is) or `discard()` (a capability takes the turn)."""
        self._held = []
        self.speculative = True

    def release(self) -> None:
        """Publish what was held, then stream on; audio held past an interruption is dropped."""
        held, self._held = self._held or [], None
        self._released_at = time.monotonic()
        for ev in held:
            if isinstance(ev, AudioOut) and self.interrupted:
                continue
            self._out(ev)
        if self._pending_end is not None:
            self._end(*self._pending_end)

    async def discard(self) -> None:
        """Drop the speculative reply: nothing of it is published, and the conversation keeps an
        empty reply after the user's turn (the capability that took the turn answers instead)."""
        self.discarded = True
        self._held = None
        await self.interrupt()

    def emit(self, ev: OutputEvent) -> bool:
        """Publish one event of this turn unless it was interrupted; whether it went out."""
        if self.interrupted:
            return False
        self._publish(ev)
        return True

    def _emit_audio(self, ev: AudioOut) -> bool:
        if not self.emit(ev):
            return False
        if ev.seq == 0:
            # the split of the time to first audio is taken now; later work must not count
            self._engine_wait_s_at_first_audio = self._engine_wait_s
            self._decode_s_at_first_audio = self.speech.decode_s
        return True

    def _metric(self, stage: str, seconds: float, **extra: int | float | str | bool) -> None:
        self._publish(
            Metrics(session=self.session, turn=self.turn, stage=stage, seconds=seconds, extra=extra)
        )

    # -- interruption -----------------------------------------------------------------------
    async def interrupt(self) -> None:
        """Stop the turn now and wait until its context has been cut to what was heard."""
        if self.interrupted:
            if self.task is not None:
                await asyncio.shield(self.task)
            return
        self.interrupted = True
        self.speech.stopped = True
        if self.task is not None and self.task.done():
            # generation had finished but its audio was still playing: cut what was not heard
            self._cut_to_heard()
            return
        if self._stream is not None:
            await self._stream.cancel()
        elif self.task is not None:
            self.task.cancel()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self.task)

    # -- model reply ------------------------------------------------------------------------
    async def run_reply(
        self,
        engine: ConversationEngine,
        user_turn: Turn | None,
        times: TurnInputTimes,
        *,
        options: ReplyOptions | None = None,
        kind: str = "reply",
    ) -> None:
        """Answer `user_turn` (or the staged turn) with the conversation's engine."""
        self.replied = True
        started = time.monotonic()
        self.emit(TurnStarted(session=self.session, turn=self.turn, mode=engine.mode, kind=kind))
        tokens = 0
        try:
            stream = engine.reply(user_turn, options or ReplyOptions())
        except Exception as exc:
            self._fail("reply.start", f"the reply could not start: {exc}")
            self._end(0, times, started)
            return
        self._stream = stream
        async with stream:
            it = stream.__aiter__()
            while True:
                t0 = time.perf_counter()
                try:
                    ev = await it.__anext__()
                except StopAsyncIteration:
                    break
                self._engine_wait_s += time.perf_counter() - t0
                if self._first_token_at is None:
                    self._first_token_at = time.monotonic()
                if self.interrupted:
                    break
                await self._on_parsed(ev)
                if self._room is not None:
                    await self._room()
            await self.speech.finish()
        result = stream.result
        if result is not None:
            tokens = result.decode_tokens
            if result.reason == "error":
                self._fail("reply.error", f"the reply failed: {result.error}")
            elif result.reason == "length" and not self.interrupted:
                self.reason = "length"
            self._metric("prefill", result.prefill_s, tokens=result.prefill_tokens)
            self._engine, self._parts = engine, result.parts
            if self.interrupted:
                self._cut_to_heard()
        self._end(tokens, times, started)

    def _cut_to_heard(self) -> None:
        """Make the conversation hold only what the user heard of this reply."""
        engine, parts = self._engine, self._parts
        if engine is None or parts is None:
            return
        played = 0.0 if self.discarded else self._playback.played_ms(self.turn)
        heard: tuple[Part, ...] = () if self.discarded else heard_parts(parts, played)
        try:
            engine.replace_last_reply(heard)
        except Exception as exc:  # the next turn already started: nothing to cut any more
            log.warning("turn %d: could not cut the reply to what was heard: %s", self.turn, exc)
            return
        self._engine = self._parts = None
        self._metric("heard", played / 1000.0, codes_kept=_codes(heard), codes_made=_codes(parts))

    async def _on_parsed(self, ev: object) -> None:
        if isinstance(ev, ParsedText):
            self.emit(TextDelta(session=self.session, turn=self.turn, text=ev.text))
        elif isinstance(ev, SpeechContent):
            await self.speech.content(ev.codes)
        elif isinstance(ev, SpeechBlock):
            await self.speech.end_block()
        elif isinstance(ev, ImageBlock):
            await self._image(ev.codes)
        elif isinstance(ev, Malformed | Truncated):
            log.debug("reply of turn %d: %s", self.turn, ev)

    async def _image(self, codes: tuple[int, ...]) -> None:
        """Publish an image: its codes at once, then the decoded PNG (diffusion takes a while)."""
        png: bytes | None = None
        try:
            png = await asyncio.get_running_loop().run_in_executor(self._executor, self._decode_png, codes)
        except Exception as exc:
            self._fail("image.decode", f"the image could not be decoded: {exc}", recoverable=True)
        self.emit(ImageOut(session=self.session, turn=self.turn, codes=codes, png=png))

    def _decode_png(self, codes: tuple[int, ...]) -> bytes:
        picture = self.shared.image_codec().decode(codes, steps=self.shared.config.codecs.diffusion_steps)
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        return buf.getvalue()

    # -- capability -------------------------------------------------------------------------
    async def run_capability(self, cap: Capability, parts: tuple[Part, ...], times: TurnInputTimes) -> None:
        """Run a capability under supervision; its events become this turn's events."""
        started = time.monotonic()
        self.emit(TurnStarted(session=self.session, turn=self.turn, mode=cap.mode, kind=cap.name))
        ctx = CapabilityContext(
            parts=parts,
            engine_factory=self.shared.engine,
            session=self.session,
            turn=self.turn,
            capability=cap.name,
            voice=self.voice,
        )
        try:
            async for ev in run_capability(cap, ctx, timeout_s=self.shared.config.plugins.timeout_s):
                if self.interrupted:
                    break
                await self._on_capability_event(ev)
            await self.speech.finish()
        except asyncio.CancelledError:
            if not self.interrupted:
                raise
        self._end(0, times, started)

    async def _on_capability_event(self, ev: OutputEvent) -> None:
        if self._first_token_at is None:
            self._first_token_at = time.monotonic()
        if isinstance(ev, SpeechCodes):
            await self.speech.layer(ev.layer, ev.codes)
        elif isinstance(ev, ImageOut) and ev.png is None:
            await self._image(ev.codes)
        elif isinstance(ev, ErrorEvent):
            self.reason = "error"
            self.emit(ev)
        else:
            # text deltas, progress, decoded images and anything else a plugin adds
            self.emit(ev)

    # -- the end ----------------------------------------------------------------------------
    def _fail(self, code: str, message: str, *, recoverable: bool = True) -> None:
        if not recoverable or code != "image.decode":
            self.reason = "error"
        self._publish(ErrorEvent(session=self.session, turn=self.turn, code=code, message=message))

    def _end(self, tokens: int, times: TurnInputTimes, started: float) -> None:
        if self._held is not None:
            # the route is not known yet: the end (and its metrics) waits for the release
            self._pending_end = (tokens, times, started)
            return
        self._pending_end = None
        if self.interrupted:
            self.reason = "interrupted"
        now = time.monotonic()
        if times.vad_s is not None:
            self._metric("vad", times.vad_s)
        if times.vad_s is not None or times.encode_s:
            self._metric("encode", times.encode_s)
        if times.transcribe_s:
            self._metric("transcribe", times.transcribe_s)
        if self._first_token_at is not None:
            self._metric("first_token", self._first_token_at - times.ended_at)
        first_audio = self.speech.first_audio_at
        if first_audio is not None:
            # held audio went out when the route was known
            first_audio = max(first_audio, self._released_at)
            total = first_audio - times.ended_at
            engine_s = self._engine_wait_s_at_first_audio
            making = engine_s + self._decode_s_at_first_audio
            # a speculative reply was made while the transcript was: only the longer one waited
            waited = max(times.transcribe_s, making) if self.speculative else times.transcribe_s + making
            overhead = total - times.encode_s - waited
            self._metric(
                "first_audio",
                total,
                encode_s=times.encode_s,
                transcribe_s=times.transcribe_s,
                engine_s=engine_s,
                decode_s=self._decode_s_at_first_audio,
                overhead_s=max(overhead, 0.0),
                speculative=self.speculative,
            )
        self._metric(
            "turn",
            now - started,
            reason=self.reason,
            tokens=tokens,
            audio_ms=self.speech.produced_ms,
            decode_s=self.speech.decode_s,
        )
        # the end is published even after an interruption: clients need to know the turn is over
        self._publish(TurnEnded(session=self.session, turn=self.turn, reason=self.reason, tokens=tokens))


def _codes(parts: tuple[Part, ...]) -> int:
    from mio_agent.conversation import SpeechPart

    return sum(len(p.content) for p in parts if isinstance(p, SpeechPart))
