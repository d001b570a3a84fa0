"""A conversation session: input events in (voice, text, images, camera, commands), output events on its bus."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from mio_agent.bus import EventBus
from mio_agent.capability import RouteDecision
from mio_agent.conversation import ImagePart, Mode, Part, TextPart, Turn
from mio_agent.engine import ReplyOptions
from mio_agent.events import (
    AudioIn,
    ErrorEvent,
    Event,
    EventError,
    ImageIn,
    InputLevel,
    Interrupt,
    InvokeCapability,
    Metrics,
    Mute,
    PlaybackClear,
    PlaybackProgress,
    SessionState,
    TextIn,
    UserSpeechEnded,
    UserSpeechStarted,
    UserTurn,
    VideoFrame,
)
from mio_agent.runtime.audio.base import FRAME_MS, SAMPLE_RATE, AudioFrame
from mio_agent.runtime.audio.convert import MicConverter
from mio_agent.runtime.voice.agent_turn import AgentTurn, TurnInputTimes
from mio_agent.runtime.voice.inputs import MAX_QUEUED_AUDIO_S, InputQueue
from mio_agent.runtime.voice.listen import Listener, Utterance
from mio_agent.runtime.voice.playback import PlaybackControl, ReportedPlayback
from mio_agent.runtime.voice.routing import TurnRouter
from mio_agent.runtime.voice.staging import TurnPrefill
from mio_agent.runtime.voice.visual import ImageInputs
from mio_agent.store_records import new_session_id

if TYPE_CHECKING:
    from mio_agent.runtime.voice.resources import SharedResources

__all__ = ["ACCEPTED_INPUTS", "MAX_QUEUED_AUDIO_S", "Session"]

log = logging.getLogger(__name__)

ACCEPTED_INPUTS: tuple[type[Event], ...] = (
    AudioIn,
    TextIn,
    ImageIn,
    InvokeCapability,
    VideoFrame,
    PlaybackProgress,
    Interrupt,
    Mute,
)
"""The event types `Session.submit` takes."""

# how many 20 ms frames one input.level event sums up
_LEVEL_FRAMES = 5


class Session:
    """One conversation: its engine (history + KV cache), listener, images, and the agent's turns.

    Everything it does is published on `bus`; everything it is asked arrives through `submit`.
    Input is processed in order by one task, so a slow step delays later input of this session
    only. Agent turns run as their own tasks, so the session keeps listening while it speaks
    and a barge-in can stop a reply between two decode steps.
    """

    def __init__(
        self,
        shared: SharedResources,
        *,
        bus: EventBus | None = None,
        session_id: str | None = None,
        mode: Mode | None = None,
        playback: PlaybackControl | None = None,
        reply_options: ReplyOptions | None = None,
    ) -> None:
        cfg = shared.config
        self.reply_options = reply_options
        self.shared = shared
        self.id = session_id or new_session_id()
        self.bus = bus if bus is not None else EventBus()
        self.mode: Mode = mode or cfg.engine.mode
        self.engine = shared.engine("std" if self.mode == "std" else "voice")
        self.playback: PlaybackControl = playback if playback is not None else ReportedPlayback()
        # encoding (user input) and decoding (agent output) each keep their order on one thread
        self._encode_pool = ThreadPoolExecutor(1, thread_name_prefix=f"mio-encode-{self.id[:8]}")
        self._decode_pool = ThreadPoolExecutor(1, thread_name_prefix=f"mio-decode-{self.id[:8]}")
        self.listener = Listener(shared, cfg.audio, self._encode_pool)
        self.prefill = TurnPrefill(self.engine)
        self.images = ImageInputs(shared, cfg.camera, self._encode_pool)
        self.router = TurnRouter(
            shared, self.images, session=self.id, mode=self.mode, publish=self.bus.publish, error=self._error
        )
        self._inputs = InputQueue(self._handle, room=self.bus.room, failed=self._input_failed)
        self._converter: MicConverter | None = None
        self._task: asyncio.Task[None] | None = None
        self._agent: AgentTurn | None = None
        self._next_turn = 1
        self._state = "listening"
        self._muted = False
        self._levels: list[float] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.on_exchange: Callable[[int, Turn, Turn], None] | None = None
        """Called with (number, user turn, reply as heard) once an exchange is final (the next turn
        began, or the session closes): the hub stores it so a resumed session remembers it."""
        self._recorded_upto = 0
        self.dropped_audio = 0
        self.repeated_failures = 0
        self._last_failure = ""
        self.ignored_utterances = 0

    # -- life -------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    @property
    def turn(self) -> int:
        """The number the next agent turn will have."""
        return self._next_turn

    @property
    def agent_active(self) -> bool:
        return self._agent is not None and self._agent.task is not None and not self._agent.task.done()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._inputs.run(), name=f"session-{self.id}")
            self._set_state("listening", force=True)

    def restore(self, turns: Sequence[Turn], next_turn: int) -> None:
        """Put a resumed session's stored turns back into the engine (prefilled at the next turn)."""
        for turn in turns:
            self.engine.add_turn(turn)
        self._next_turn = max(self._next_turn, next_turn)
        self._recorded_upto = self._next_turn - 1

    def _record_exchange(self) -> None:
        """Hand the last finished exchange (user turn and the reply as heard) to `on_exchange`."""
        agent = self._agent
        if (
            self.on_exchange is None
            or agent is None
            or not agent.replied
            or agent.turn <= self._recorded_upto
        ):
            return
        turns = self.engine.turns
        if len(turns) >= 2 and turns[-1].role == "assistant" and turns[-2].role == "user":
            self._recorded_upto = agent.turn
            try:
                self.on_exchange(agent.turn, turns[-2], turns[-1])
            except Exception:  # the store is best effort here; the event log has everything
                log.exception("session %s: could not store turn %d", self.id, agent.turn)

    async def close(self) -> None:
        """Stop the agent, the input task and the worker threads; publish the final state."""
        if self._state == "closed":
            return
        await self.interrupt("session closed")
        if self._agent is not None and self._agent.task is not None:
            await asyncio.wait({self._agent.task})
            self._record_exchange()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._set_state("closed")
        await self._inputs.wake()  # a `send` waiting for room returns (and its submit refuses)
        # the engine's worker may be inside a decode step: wait for it off the loop
        await asyncio.get_running_loop().run_in_executor(None, self.engine.close)
        self._encode_pool.shutdown(wait=False, cancel_futures=True)
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def drained(self) -> None:
        """Wait until every input submitted so far has been processed (agent turns may still run)."""
        await self._inputs.join()

    async def idle(self, timeout: float | None = None) -> None:
        """Wait until queued input is processed and no agent turn runs (for tests and file input)."""
        async with asyncio.timeout(timeout):
            while True:
                await self._inputs.join()
                agent = self._agent
                if agent is not None and agent.task is not None and not agent.task.done():
                    await asyncio.wait({agent.task})
                    continue
                if self._inputs.empty():
                    return

    # -- publishing -------------------------------------------------------------------------
    def publish(self, ev: Event) -> None:
        self.bus.publish(ev)
        if ev.type == "audio.out" and self._state != "speaking":
            self._set_state("speaking")

    def _set_state(self, state: str, *, force: bool = False) -> None:
        if state == self._state and not force:
            return
        self._state = state
        self.bus.publish(SessionState(session=self.id, turn=self._next_turn, state=state))  # type: ignore[arg-type]

    def _error(self, code: str, message: str, turn: int | None = None) -> None:
        self.bus.publish(
            ErrorEvent(
                session=self.id, turn=self._next_turn if turn is None else turn, code=code, message=message
            )
        )

    # -- input ------------------------------------------------------------------------------
    def submit(self, ev: Event) -> None:
        """Hand an input or control event to the session; never waits.

        Control events act at once (an interrupt does not queue behind audio); the rest are
        processed in order. Raises EventError for an event type the session does not take.
        """
        if not isinstance(ev, ACCEPTED_INPUTS):
            names = ", ".join(cls.type for cls in ACCEPTED_INPUTS)
            raise EventError(f"a session does not take {ev.type!r} events; it takes: {names}")
        if self._state == "closed":
            raise EventError(f"session {self.id} is closed")
        if not isinstance(ev, AudioIn | VideoFrame | PlaybackProgress):
            # accepted commands go to the log (and `mio-agent replay`); audio is logged as frames
            self.bus.publish(dataclasses.replace(ev, session=self.id, turn=self._next_turn))
        if isinstance(ev, Interrupt):
            self._spawn(self.interrupt(ev.reason))
        elif isinstance(ev, Mute):
            self._muted = ev.muted
            self._set_state("muted" if ev.muted else "listening")
        elif isinstance(ev, PlaybackProgress):
            if isinstance(self.playback, ReportedPlayback):
                self.playback.report(ev.turn, ev.played_ms)
        elif isinstance(ev, AudioIn):
            if self._muted:
                return
            if not self._inputs.put(ev):
                if not self.dropped_audio:
                    self._error(
                        "input.overflow",
                        f"audio arrives faster than it is processed; more than {MAX_QUEUED_AUDIO_S:g} s "
                        "waits, so new audio is dropped (send audio in real time, or wait with Session.send)",
                    )
                self.dropped_audio += 1
        else:
            self._inputs.put(ev)

    async def send(self, ev: Event) -> None:
        """`submit`, but audio waits while the session is more than `MAX_QUEUED_AUDIO_S / 2` behind."""
        if isinstance(ev, AudioIn):
            await self._inputs.wait_below(
                MAX_QUEUED_AUDIO_S / 2, ev.duration_s, lambda: self._state == "closed"
            )
        self.submit(ev)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _input_failed(self, ev: Event, message: str, exc: Exception | None) -> None:
        # the same failure on every audio frame is reported once, not fifty times a second
        if message == self._last_failure:
            self.repeated_failures += 1
            return
        self._last_failure = message
        if exc is not None:
            log.error("session %s: %s failed", self.id, ev.type, exc_info=exc)
        self._error(f"input.{ev.type}", message)

    async def _handle(self, ev: Event) -> None:
        if isinstance(ev, AudioIn):
            await self._audio(ev)
        elif isinstance(ev, TextIn):
            if ev.text.strip():
                parts: tuple[Part, ...] = (*self.images.take_pending(), TextPart(ev.text))
                await self._start_turn(Turn("user", parts), TurnInputTimes(time.monotonic()), text=ev.text)
        elif isinstance(ev, ImageIn):
            await self.images.add_upload(ev.data, ev.name)
        elif isinstance(ev, VideoFrame):
            self.images.add_frame(ev)
        elif isinstance(ev, InvokeCapability):
            await self._invoke(ev)

    async def _audio(self, ev: AudioIn) -> None:
        conv = self._converter
        if conv is None or (conv.rate, conv.channels) != (ev.sample_rate, ev.channels):
            conv = self._converter = MicConverter(ev.sample_rate, ev.channels)
        for frame in conv.push(ev.pcm, ev.t):
            await self._frame(frame)

    async def _frame(self, frame: AudioFrame) -> None:
        self.bus.publish(
            AudioIn(session=self.id, turn=self._next_turn, t=frame.t, pcm=frame.pcm, sample_rate=SAMPLE_RATE)
        )
        self._levels.append(frame.level_dbfs())
        if len(self._levels) >= _LEVEL_FRAMES:
            level = max(self._levels)
            self._levels.clear()
            self.bus.publish(
                InputLevel(session=self.id, turn=self._next_turn, dbfs=level, speech=self.listener.in_speech)
            )
        for heard in await self.listener.push(frame):
            if heard == "started":
                self.bus.publish(UserSpeechStarted(session=self.id, turn=self._next_turn))
                self.prefill.new_utterance()
                self.listener.set_images(self.images.for_turn())
                if not self.agent_active:
                    self._set_state("hearing")
            elif isinstance(heard, Utterance):
                await self._utterance(heard)
        if self.listener.in_speech:
            await self._check_barge_in(frame)
            self._stage_speech()

    async def _check_barge_in(self, frame: AudioFrame) -> None:
        if not (self.agent_active or self.playback.playing()):
            return
        if self.listener.heard_ms(frame) >= self.shared.config.audio.barge_in_ms:
            await self.interrupt("barge-in", heard_at=frame.t + FRAME_MS / 1000)

    def _stage_speech(self) -> None:
        """Prefill the speech heard so far while the user goes on speaking."""
        if self.agent_active or not self.prefill.can_stage():
            return
        turn = self.listener.turn_so_far()
        if turn is not None:
            self.prefill.stage(turn)

    async def _utterance(self, u: Utterance) -> None:
        self.bus.publish(UserSpeechEnded(session=self.id, turn=self._next_turn, duration_s=u.duration_s))
        if (self.agent_active or self.playback.playing()) and not u.interrupted_agent:
            # shorter than a barge-in (a backchannel, a cough) while the agent talks: not a turn
            self.ignored_utterances += 1
            self.prefill.withdraw()
            return
        times = TurnInputTimes(u.ended_at, vad_s=u.vad_s, encode_s=u.encode_s)
        # the turn's speech was prefilled while it was spoken: what is left of that prefill counts as encoding
        times.encode_s += await self.prefill.settle()
        await self._start_turn(u.turn, times, speech_s=u.duration_s, keyframes=u.keyframes)

    # -- turns ------------------------------------------------------------------------------
    async def interrupt(self, reason: str = "user", *, heard_at: float | None = None) -> bool:
        """Stop the agent now: playback cleared everywhere, the reply cut to what was heard.

        `heard_at`: when the audio that decided a barge-in was captured; the delay from then to
        the clear is published as the `barge_in` metric."""
        agent = self._agent
        active = agent is not None and agent.task is not None and not agent.task.done()
        if not active and not self.playback.playing():
            return False
        self.playback.clear()
        turn = agent.turn if agent is not None else self._next_turn - 1
        self.bus.publish(PlaybackClear(session=self.id, turn=turn))
        if heard_at is not None:
            self.bus.publish(
                Metrics(session=self.id, turn=turn, stage="barge_in", seconds=time.monotonic() - heard_at)
            )
        if self.listener.in_speech:
            self.listener.mark_interrupting()
        # the cut edits the history: let the prefill of the user's words finish first (ms)
        await self.prefill.quiesce()
        if agent is not None:
            await agent.interrupt()
        log.debug("session %s: turn %d interrupted (%s)", self.id, turn, reason)
        return True

    async def _start_turn(
        self,
        turn: Turn,
        times: TurnInputTimes,
        *,
        text: str = "",
        speech_s: float = 0.0,
        keyframes: tuple[int, ...] = (),
        invoked: RouteDecision | None = None,
    ) -> None:
        if self.agent_active:
            await self.interrupt("new turn")
        self._record_exchange()
        await self.prefill.quiesce()
        n = self._next_turn
        self._next_turn += 1
        images = sum(isinstance(p, ImagePart) for p in turn.parts)
        self.bus.publish(
            UserTurn(
                session=self.id, turn=n, text=text, speech_s=speech_s, images=images, keyframes=keyframes
            )
        )
        self._set_state("thinking")
        if self.router.transcribing(turn, invoked):
            # the reply starts while the speech is transcribed for routing; its events wait until
            # the route is known, so the first audio comes after the longer of the two, not both
            speculative = self._new_agent(n)
            speculative.hold()
            speculative.task = asyncio.create_task(
                speculative.run_reply(self.engine, turn, times, options=self.reply_options)
            )
            route = await self.router.decide(turn, n, times)
            if route.capability is None:
                speculative.release()
                speculative.task.add_done_callback(functools.partial(self._agent_done, speculative))
                return
            await speculative.discard()
        else:
            route = await self.router.decide(turn, n, times, invoked=invoked)
        agent = self._new_agent(n)
        if route.capability is not None:
            if self.engine.staged is not None:
                self.engine.stage_turn(None)
            agent.task = asyncio.create_task(agent.run_capability(route.capability, route.parts, times))
        else:
            agent.task = asyncio.create_task(
                agent.run_reply(self.engine, turn, times, options=self.reply_options)
            )
        agent.task.add_done_callback(functools.partial(self._agent_done, agent))

    def _new_agent(self, n: int) -> AgentTurn:
        agent = AgentTurn(
            self.shared,
            session=self.id,
            turn=n,
            publish=self.publish,
            playback=self.playback,
            executor=self._decode_pool,
            voice=self.mode == "voice",
            room=self.bus.room,
        )
        self._agent = agent
        return agent

    def _agent_done(self, agent: AgentTurn, _task: object = None) -> None:
        if self._agent is agent and self._state != "closed":
            # a muted session stays muted after a (typed or invoked) turn: its microphone is still off
            self._set_state("muted" if self._muted else "hearing" if self.listener.in_speech else "listening")

    async def _invoke(self, ev: InvokeCapability) -> None:
        names = [c.name for c in self.shared.capabilities()]
        if ev.name not in names:
            self._error("capability.unknown", f"no capability {ev.name!r}; available: {', '.join(names)}")
            return
        parts: list[Part] = []
        if ev.image is not None:
            image = await self.images.encode_upload(ev.image, "invoke")
            # the capability takes the image: an earlier upload of it is not also for the next turn
            self.images.withdraw(image)
            parts.append(image)
        if ev.text.strip():
            parts.append(TextPart(ev.text))
        decision = RouteDecision(ev.name, "invoked explicitly", "")
        await self._start_turn(
            Turn("user", tuple(parts) or (TextPart(""),)),
            TurnInputTimes(time.monotonic()),
            text=ev.text,
            invoked=decision,
        )
