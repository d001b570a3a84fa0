"""EventBus: asyncio publish/subscribe with a bounded queue and a full-queue policy per subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Literal, TypeAlias

from mio_agent.events import Event
from mio_agent.exceptions import SubscriptionClosed

__all__ = ["EventBus", "Policy", "Subscription", "SubscriptionClosed"]

log = logging.getLogger(__name__)

Policy: TypeAlias = Literal["drop_oldest", "disconnect", "block"]
POLICIES: tuple[Policy, ...] = ("drop_oldest", "disconnect", "block")


class Subscription:
    """One consumer's view of the bus: a bounded queue of the events it asked for.

    Read it with `async for ev in sub` or `await sub.get()`. Control events (`ev.control`) wait
    in a queue of their own and are always handed out before queued data events, in the order
    they were published. Each of the two queues holds at most `maxsize` events; what happens
    when one is full is the subscription's policy:

    - "drop_oldest": the oldest queued event of the same kind is dropped (so a flood of data
      never evicts an interrupt) and `dropped` counts it. For displays, which want the newest.
    - "disconnect": the subscription closes with a `closed_reason` saying the consumer fell
      behind, and its queued events are dropped. For network clients: a stuck client loses its
      subscription instead of memory. Its `async for` loop then ends; `get()` raises
      SubscriptionClosed. The consumer should check `closed_reason` and hang up.
    - "block": `EventBus.publish_wait` waits until there is room. For trusted in-process
      consumers that must see everything (the session log). A plain `publish` never waits: it
      queues past `maxsize` rather than lose the event; producers of many events await
      `EventBus.room()` between them, which bounds the queue to about `maxsize` plus what one
      input or one reply event makes.

    All methods run on the event loop's thread.
    """

    def __init__(
        self,
        bus: EventBus,
        name: str,
        *,
        maxsize: int,
        policy: Policy,
        filter: Callable[[Event], bool] | None,
    ) -> None:
        self.name = name
        self.maxsize = maxsize
        self.policy: Policy = policy
        self.filter = filter
        self.delivered = 0
        """Events handed to the consumer."""
        self.dropped = 0
        """Events this subscription accepted but will never hand out (full queue, disconnect, close)."""
        self.closed_reason: str | None = None
        """None while open; why it closed otherwise."""
        self._bus = bus
        self._data: deque[Event] = deque()
        self._control: deque[Event] = deque()
        self._readers: deque[asyncio.Future[None]] = deque()
        self._writers: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        state = "open" if self.closed_reason is None else f"closed: {self.closed_reason}"
        return (
            f"<Subscription {self.name!r} {self.policy} {self.pending}/{self.maxsize} "
            f"delivered={self.delivered} dropped={self.dropped} {state}>"
        )

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    @property
    def pending(self) -> int:
        """Events queued and not yet handed out."""
        return len(self._data) + len(self._control)

    # -- consumer side ----------------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    async def get(self) -> Event:
        """The next event, control events first; waits while the queue is empty.

        Raises SubscriptionClosed once the subscription is closed and (for a drained close)
        its queue is empty.
        """
        while True:
            if self._control:
                return self._hand_out(self._control)
            if self._data:
                return self._hand_out(self._data)
            if self.closed_reason is not None:
                raise SubscriptionClosed(self.name, self.closed_reason)
            await self._wait(self._readers)

    def _hand_out(self, queue: deque[Event]) -> Event:
        ev = queue.popleft()
        self.delivered += 1
        self._wake(self._writers)
        return ev

    def discard(self, predicate: Callable[[Event], bool]) -> int:
        """Remove queued data events that match (e.g. stale audio after playback.clear); how many.

        Discarded events count in `dropped`.
        """
        kept = deque(ev for ev in self._data if not predicate(ev))
        removed = len(self._data) - len(kept)
        self._data = kept
        self.dropped += removed
        if removed:
            self._wake_all(self._writers)
        return removed

    def close(self, reason: str = "closed by its consumer", *, drain: bool = False) -> None:
        """Stop receiving events. With `drain`, the consumer still gets what is queued, then the end.

        Idempotent: the first reason is kept.
        """
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        if not drain:
            self.dropped += self.pending
            self._data.clear()
            self._control.clear()
        self._bus._forget(self)
        self._wake_all(self._readers)
        self._wake_all(self._writers)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- publisher side (called by EventBus) ------------------------------------------------------

    def _wants(self, ev: Event) -> bool:
        if self.closed_reason is not None:
            return False
        if self.filter is None:
            return True
        try:
            return self.filter(ev)
        except Exception:
            # A broken filter must not break publishing for every other subscriber.
            log.exception("filter of subscription %r failed on %s; event skipped", self.name, ev.type)
            return False

    def _full_for(self, ev: Event) -> bool:
        return len(self._control if ev.control else self._data) >= self.maxsize

    def _put(self, ev: Event) -> None:
        queue = self._control if ev.control else self._data
        if len(queue) >= self.maxsize:
            if self.policy == "disconnect":
                self.dropped += 1
                self.close(
                    f"fell behind: {len(queue)} {'control' if ev.control else 'data'} events queued "
                    f"(maxsize {self.maxsize})"
                )
                return
            if self.policy == "drop_oldest":
                queue.popleft()
                self.dropped += 1
        queue.append(ev)
        self._wake(self._readers)

    async def _room(self) -> None:
        await self._wait(self._writers)

    @classmethod
    async def _wait(cls, waiters: deque[asyncio.Future[None]]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.cancelled():
                # Otherwise cancelled futures pile up under a consumer that polls with timeouts.
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)
            else:
                # Woken, then cancelled before running: pass the wake-up on so it is not lost.
                cls._wake(waiters)
            raise

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    @staticmethod
    def _wake_all(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)


class EventBus:
    """Publish/subscribe of events on one asyncio event loop.

    `publish` never blocks, so the engine is never stalled by a slow display or client; each
    subscriber's policy decides what its full queue does (see Subscription). `publish_wait`
    also waits for room at "block" subscribers. Worker threads (the decoding thread, the
    microphone callback) use `publish_threadsafe`.

    The bus binds to the running loop when it is built inside one, else at its first
    `subscribe` or `publish` from a running loop. Every method except `publish_threadsafe` must
    run on that loop's thread.
    """

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._closed = False
        self.published = 0
        """Events published (whether or not anyone wanted them)."""
        self._bind()

    def __repr__(self) -> str:
        return f"<EventBus {len(self._subs)} subscriptions, {self.published} published>"

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The open subscriptions, oldest first."""
        return tuple(self._subs)

    def _bind(self) -> None:
        # Cheap guard against the easy mistake of calling publish() from a worker thread, which
        # would corrupt the queues silently.
        if self._thread is not None and threading.get_ident() != self._thread:
            raise RuntimeError("EventBus used from another thread than its loop's: use publish_threadsafe")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._loop is None:
            self._loop, self._thread = loop, threading.get_ident()
        elif loop is not self._loop:
            raise RuntimeError("EventBus used from a different event loop than the one it is bound to")

    def subscribe(
        self,
        name: str,
        *,
        maxsize: int = 256,
        policy: Policy = "drop_oldest",
        filter: Callable[[Event], bool] | None = None,
    ) -> Subscription:
        """A new subscription receiving every later event for which `filter` (if any) is true.

        `name` labels it in logs and counters; `maxsize` bounds each of its two queues (data and
        control); `policy` says what a full queue does (see Subscription).
        """
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self._bind()
        sub = Subscription(self, name, maxsize=maxsize, policy=policy, filter=filter)
        if self._closed:
            sub.close("the bus is closed")
        else:
            self._subs.append(sub)
        return sub

    def publish(self, ev: Event) -> None:
        """Queue `ev` for every subscriber that wants it, now; never waits (see Subscription)."""
        self._bind()
        if self._closed:
            return
        self.published += 1
        # A copy: a disconnect while publishing removes the subscription from the list.
        for sub in tuple(self._subs):
            if sub._wants(ev):
                sub._put(ev)

    async def publish_wait(self, ev: Event) -> None:
        """Like `publish`, first waiting until every "block" subscriber that wants `ev` has room.

        All subscribers then get `ev` at once, so they see events in the same order.
        """
        self._bind()
        while not self._closed:
            full = next(
                (s for s in self._subs if s.policy == "block" and s._full_for(ev) and s._wants(ev)),
                None,
            )
            if full is None:
                break
            await full._room()
        self.publish(ev)

    async def room(self) -> None:
        """Wait until no "block" subscriber's data queue is full.

        Producers of many events (a session's input loop, a reply's stream) await this between
        events, so a slow "block" consumer (the session log on a slow disk) holds them back
        instead of letting its queue grow without bound. Control events are never held back.
        """
        self._bind()
        while not self._closed:
            full = next((s for s in self._subs if s.policy == "block" and len(s._data) >= s.maxsize), None)
            if full is None:
                return
            await full._room()

    def publish_threadsafe(self, ev: Event) -> None:
        """`publish` from any thread: the event is published on the bus's loop soon after.

        Events from one thread keep their order. Raises RuntimeError if the bus is not bound to
        a loop yet or that loop is closed.
        """
        if self._loop is None:
            raise RuntimeError("EventBus not bound to a loop yet: subscribe or publish from the loop first")
        self._loop.call_soon_threadsafe(self.publish, ev)

    def close(self, reason: str = "the bus closed") -> None:
        """Close every subscription; consumers still get what is queued, then their loops end.

        Later publishes are ignored, later subscriptions are born closed.
        """
        self._closed = True
        for sub in tuple(self._subs):
            sub.close(reason, drain=True)

    def _forget(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
