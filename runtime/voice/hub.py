"""Many sessions on one model: opening, finding, logging and closing them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from mio_agent.bus import EventBus, Subscription
from mio_agent.conversation import Mode, Turn
from mio_agent.engine import ReplyOptions
from mio_agent.events import Event
from mio_agent.exceptions import SubscriptionClosed
from mio_agent.runtime.voice.playback import PlaybackControl
from mio_agent.runtime.voice.plugin_endpoints import PluginEndpoints
from mio_agent.runtime.voice.session import Session
from mio_agent.session_log import SessionLog, read_events

if TYPE_CHECKING:
    from mio_agent.runtime.voice.resources import SharedResources

__all__ = ["LOG_QUEUE", "SessionHub"]

log = logging.getLogger(__name__)

LOG_QUEUE = 4096
"""Events the log writer may fall behind by before the bus queues past it (it never drops)."""


class _LogWriter:
    """Writes every event of a session, and its finished exchanges, to its SessionLog.

    The SessionLog is owned by one worker thread: event batches, exchange records (SQLite commits
    with synchronous=FULL) and the final close all run there, in order, never on the event loop.
    """

    def __init__(self, session_log: SessionLog, bus: EventBus) -> None:
        self.log = session_log
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"log-{session_log.session_id}")
        self._sub: Subscription = bus.subscribe("session-log", maxsize=LOG_QUEUE, policy="block")
        self._task = asyncio.create_task(self._run(), name=f"log-{session_log.session_id}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                batch = [await self._sub.get()]
            except SubscriptionClosed:
                return
            while self._sub.pending:
                batch.append(await self._sub.get())
            await loop.run_in_executor(self._pool, self._write, batch)

    def _write(self, batch: list[Event]) -> None:
        for ev in batch:
            try:
                self.log.write(ev)
            except Exception:  # a full disk must not stop the conversation; say it once per batch
                log.exception("session log %s: cannot write %s", self.log.session_id, ev.type)
                return

    def record(self, n: int, user: Turn, reply: Turn) -> None:
        """Store a finished exchange on the log's thread (returns at once; called from the loop)."""
        self._pool.submit(self._record, n, user, reply)

    def _record(self, n: int, user: Turn, reply: Turn) -> None:
        try:
            _store_exchange(self.log, n, user, reply)
        except Exception:  # the store is best effort here; the event log has everything
            log.exception("session %s: could not store turn %d", self.log.session_id, n)

    async def close(self, status: str) -> None:
        self._sub.close("session closed", drain=True)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self.log.close, status)
        self._pool.shutdown(wait=False)


def _store_exchange(session_log: SessionLog, n: int, user: Turn, reply: Turn) -> None:
    # store turn indexes: 2(n-1) for the user, 2(n-1)+1 for the reply (the log's turn numbers are n)
    session_log.record_turn(2 * (n - 1), "user", parts=user.parts)
    session_log.record_turn(2 * (n - 1) + 1, "assistant", parts=reply.parts)


def _restore(session: Session, session_log: SessionLog) -> None:
    """A resumed session gets its stored turns back and goes on numbering after its last event."""
    assert session_log.store is not None
    data = session_log.store.load_session(session_log.session_id, events=False)
    turns = [Turn("user" if r.role == "user" else "assistant", r.parts) for r in data.turns]
    # numbering goes on after the last turn of the log (capability turns are not stored turns)
    last = 0
    for ev in read_events(session_log.folder, payloads=False):
        if not isinstance(ev, dict) and ev.type == "turn.ended":
            last = max(last, ev.turn)
    session.restore(turns, next_turn=last + 1)


class SessionHub:
    """The live sessions of one process, sharing `shared` (one model, many conversations).

    With `log_root`, each session writes events.jsonl, its audio and the store under
    `log_root/<session id>/` (SessionLog); None keeps nothing on disk.
    """

    def __init__(self, shared: SharedResources, *, log_root: str | Path | None = None) -> None:
        self.shared = shared
        self.log_root = Path(log_root) if log_root is not None else None
        self._sessions: dict[str, Session] = {}
        self._logs: dict[str, _LogWriter] = {}
        self._endpoints: dict[str, PluginEndpoints] = {}
        self.on_open: list[Callable[[Session], None]] = []
        """Called with each new session (e.g. the MQTT bridge starts publishing it)."""

    @property
    def sessions(self) -> tuple[Session, ...]:
        return tuple(self._sessions.values())

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    async def open(
        self,
        session_id: str | None = None,
        mode: Mode | None = None,
        *,
        playback: PlaybackControl | None = None,
        reply_options: ReplyOptions | None = None,
    ) -> Session:
        """The live session `session_id`, or a new one (resuming its log folder if it exists)."""
        if session_id is not None and session_id in self._sessions:
            return self._sessions[session_id]
        # refused before a log folder is made for a session that cannot be served
        self.shared.check_room()
        session_log: SessionLog | None = None
        if self.log_root is not None:
            config = self.shared.config.to_dict()
            if session_id is not None and (self.log_root / session_id).is_dir():
                session_log = await asyncio.to_thread(SessionLog.resume, self.log_root, session_id)
            else:
                session_log = await asyncio.to_thread(
                    functools.partial(
                        SessionLog.start,
                        self.log_root,
                        mode=mode or self.shared.config.engine.mode,
                        config=config,
                    )
                )
            session_id = session_log.session_id
        try:
            session = Session(
                self.shared, session_id=session_id, mode=mode, playback=playback, reply_options=reply_options
            )
        except BaseException:
            # no session (e.g. every row of the batched decode is taken): its log must not stay open
            if session_log is not None:
                await asyncio.to_thread(session_log.close, "error")
            raise
        if session_log is not None:
            if session_log.store is not None:
                await asyncio.to_thread(_restore, session, session_log)
            writer = self._logs[session.id] = _LogWriter(session_log, session.bus)
            session.on_exchange = writer.record
        self._sessions[session.id] = session
        # before start, so watchers see the session's first state too
        for callback in self.on_open:
            callback(session)
        endpoints = PluginEndpoints(session, self.shared.plugins)
        await endpoints.open()
        self._endpoints[session.id] = endpoints
        await session.start()
        return session

    async def close_session(self, session_id: str, status: str = "closed") -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        try:
            await session.close()
            endpoints = self._endpoints.pop(session_id, None)
            if endpoints is not None:
                await endpoints.close()
            writer = self._logs.pop(session_id, None)
            if writer is not None:
                try:
                    await writer.close(status)
                except Exception:  # a log that cannot finish (full disk) must not keep the session open
                    log.exception("session %s: its log could not be closed", session_id)
        finally:
            session.bus.close("the session closed")

    async def aclose(self, status: str = "closed") -> None:
        """Close every session; one that fails to close does not keep the others open."""
        for session_id in list(self._sessions):
            try:
                await self.close_session(session_id, status)
            except Exception:
                log.exception("session %s could not be closed cleanly", session_id)
