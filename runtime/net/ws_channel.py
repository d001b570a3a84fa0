"""One session's outgoing stream for WebSocket clients: numbered messages, replay buffer, slow-client policy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mio_agent.events import AudioOut, Event, ImageOut
from mio_agent.exceptions import SubscriptionClosed
from mio_agent.protocol import (
    Frame,
    FrameKind,
    ReplayBuffer,
    encode_json,
    error_message,
    event_message,
    pack_frame,
)

if TYPE_CHECKING:
    from mio_agent.runtime.voice.session import Session

__all__ = ["CLOSE_REPLACED", "CLOSE_TOO_SLOW", "Channel", "Outbox"]

log = logging.getLogger(__name__)

CLOSE_TOO_SLOW = 4008
"""Close code for a client that stopped reading: its queue filled (it may reconnect and resume)."""
CLOSE_REPLACED = 4009
"""Close code for a connection whose session was resumed on another connection."""
# events a client does not need: its own audio echoed back, raw camera frames
_NOT_SENT = frozenset({"audio.in", "video.frame"})


class Outbox:
    """What one connection still has to send: first its backlog (the welcome, then what it missed,
    at most the replay buffer), then new messages, at most `maxsize` waiting. `stop()` (or a full
    queue: the client fell behind) ends the connection with `close_code`.

    `get()` waits on an Event, so the connection's writer is the only task involved: nothing is
    left pending when it is cancelled."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._backlog: deque[str | bytes] = deque()
        self._queue: deque[str | bytes] = deque()
        self._ready = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def stopped(self) -> bool:
        return self.close_code is not None

    def preload(self, messages: Iterable[str | bytes]) -> None:
        """Send these before anything `put` (the backlog is not bounded by `maxsize`)."""
        self._backlog.extend(messages)
        self._ready.set()

    def put(self, message: str | bytes) -> None:
        if self.stopped:
            return
        if len(self._queue) >= self.maxsize:
            # the policy for a stuck client: disconnect it rather than hold memory or slow anyone
            self.stop(CLOSE_TOO_SLOW, "client too slow: its queue filled; reconnect with resume")
            return
        self._queue.append(message)
        self._ready.set()

    def stop(self, code: int, reason: str) -> None:
        """End the connection (the first reason given wins); what is still queued is not sent."""
        if not self.stopped:
            self.close_code, self.close_reason = code, reason
            self._ready.set()

    async def get(self) -> str | bytes | None:
        """The next message to send, waiting for one; None once stopped."""
        while True:
            if self.stopped:
                return None
            if self._backlog:
                return self._backlog.popleft()
            if self._queue:
                return self._queue.popleft()
            self._ready.clear()
            await self._ready.wait()


class Channel:
    """Numbers every message of a session, keeps the last ones for resuming clients, and hands
    them to the connection attached now (if any). The session's bus is read by one task with a
    blocking subscription, so nothing is lost between the bus and the replay buffer."""

    def __init__(self, session: Session, replay_events: int) -> None:
        self.session = session
        self.replay = ReplayBuffer(replay_events)
        self.seq = 0
        self.outbox: Outbox | None = None
        self.peer: str | None = None
        self.detached_at: float | None = time.monotonic()
        self._sub = session.bus.subscribe(
            "websocket", maxsize=4096, policy="block", filter=lambda e: e.type not in _NOT_SENT
        )
        self._task = asyncio.create_task(self._pump(), name=f"ws-channel-{session.id}")

    def send(self, message: dict[str, Any] | None = None, *, frame: Frame | None = None) -> int:
        """Number, keep and deliver one JSON message (its `seq` is filled in) or binary frame."""
        # encoded before it is numbered: a message that cannot be encoded must not leave a gap in the
        # seq, which a resuming client would be told is lost
        seq = self.seq + 1
        data: str | bytes
        if frame is not None:
            data = pack_frame(Frame(frame.kind, frame.stream, seq, frame.timestamp_us, frame.payload))
        else:
            assert message is not None
            data = encode_json({**message, "seq": seq})
        self.seq = seq
        self.replay.add(seq, data)
        if self.outbox is not None:
            self.outbox.put(data)
        return seq

    def send_error(
        self,
        code: str,
        message: str,
        *,
        ref: str | None = None,
        fatal: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.send(error_message(0, code, message, ref=ref, fatal=fatal, extra=extra))

    async def _pump(self) -> None:
        while True:
            try:
                ev = await self._sub.get()
            except SubscriptionClosed:
                return
            try:
                self._deliver(ev)
            except Exception:  # one odd event must not stop the stream of a session
                log.exception("session %s: cannot send %s", self.session.id, ev.type)

    def _deliver(self, ev: Event) -> None:
        ts = int(ev.t * 1e6)
        if isinstance(ev, AudioOut):
            # reply audio goes as raw PCM in a binary frame: no JSON, no base64
            self.send(frame=Frame(FrameKind.AUDIO_OUT, ev.turn, 0, ts, ev.pcm))
            return
        self.send(event_message(0, ev))
        if isinstance(ev, ImageOut) and ev.png is not None:
            self.send(frame=Frame(FrameKind.IMAGE_OUT, ev.turn, 0, ts, ev.png))

    @property
    def attached(self) -> bool:
        """Whether a connection receives this session's messages now."""
        return self.outbox is not None

    def attach(self, outbox: Outbox, peer: str, last_seq: int | None) -> tuple[list[str | bytes], int]:
        """Make `outbox` the receiver of every message from now on. Returns what it missed after
        `last_seq` (still kept: the caller preloads it, after its welcome) and how many messages
        after `last_seq` are lost (older than the replay buffer holds)."""
        if self.outbox is not None and self.outbox is not outbox:
            self.outbox.stop(CLOSE_REPLACED, "the session was resumed on another connection")
        self.outbox = outbox
        self.peer = peer
        self.detached_at = None
        if last_seq is None:
            return [], 0
        return self.replay.since(last_seq)

    def detach(self, outbox: Outbox) -> None:
        if self.outbox is outbox:
            self.outbox = None
            self.detached_at = time.monotonic()

    async def close(self) -> None:
        self._sub.close("channel closed")
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
