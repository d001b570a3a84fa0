"""A session's ordered inputs: a queue bounded in seconds of audio, handled one at a time by one task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from mio_agent.events import AudioIn, Event
from mio_agent.exceptions import MioAgentError

__all__ = ["MAX_QUEUED_AUDIO_S", "InputQueue"]

log = logging.getLogger(__name__)

MAX_QUEUED_AUDIO_S = 30.0
"""Seconds of audio the queue holds before it drops (and reports) audio: the sender outpaces the
session. Senders faster than real time (files) should use `Session.send`, which waits instead."""


class InputQueue:
    """Inputs in order: `put` never waits (audio past `MAX_QUEUED_AUDIO_S` is refused), `run` hands
    each to `handle`, and a failure of one input is reported (`failed`) without ending the run."""

    def __init__(
        self,
        handle: Callable[[Event], Awaitable[None]],
        *,
        room: Callable[[], Awaitable[None]],
        failed: Callable[[Event, str, Exception | None], None],
    ) -> None:
        self._handle = handle
        self._room = room
        self._failed = failed
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.queued_audio_s = 0.0
        self._drained = asyncio.Condition()

    def put(self, ev: Event) -> bool:
        """Queue `ev`; False (nothing queued) for audio beyond the bound."""
        if isinstance(ev, AudioIn):
            if self.queued_audio_s + ev.duration_s > MAX_QUEUED_AUDIO_S:
                return False
            self.queued_audio_s += ev.duration_s
        self._queue.put_nowait(ev)
        return True

    async def wait_below(self, seconds: float, extra: float, stop: Callable[[], bool]) -> None:
        """Wait until `extra` more seconds of audio keep the queue within `seconds` (or `stop()`)."""
        async with self._drained:
            await self._drained.wait_for(lambda: self.queued_audio_s + extra <= seconds or stop())

    async def wake(self) -> None:
        """Re-check every `wait_below` (e.g. the session closed)."""
        async with self._drained:
            self._drained.notify_all()

    async def join(self) -> None:
        await self._queue.join()

    def empty(self) -> bool:
        return self._queue.empty()

    async def run(self) -> None:
        while True:
            # a "block" consumer (the session log) that fell behind holds the inputs back
            await self._room()
            ev = await self._queue.get()
            try:
                if isinstance(ev, AudioIn):
                    self.queued_audio_s -= ev.duration_s
                    async with self._drained:
                        self._drained.notify_all()
                await self._handle(ev)
            except asyncio.CancelledError:
                raise
            except MioAgentError as exc:
                self._failed(ev, str(exc), None)
            except Exception as exc:  # one bad input must not end the session
                self._failed(ev, f"{type(exc).__name__}: {exc}", exc)
            finally:
                self._queue.task_done()
            # a queue that is never empty (audio from a file, fast) must not starve the agent's tasks
            await asyncio.sleep(0)
