"""Plugins at work in a session: event observers, the sources and sinks they contribute."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from mio_agent.endpoints import InputSource, OutputSink
from mio_agent.events import OutputEvent
from mio_agent.exceptions import MioAgentError, SubscriptionClosed

if TYPE_CHECKING:
    from mio_agent.plugin import PluginManager
    from mio_agent.runtime.voice.session import Session

__all__ = ["PluginEndpoints"]

log = logging.getLogger(__name__)


class PluginEndpoints:
    """Connects one session to its plugins: every event to `mio_agent_event` observers, output
    events to each contributed sink, and each contributed source's input events into the session.
    Each gets its own bounded subscription (oldest dropped), so a slow plugin only loses its own
    events and never stalls the session or another plugin."""

    def __init__(self, session: Session, plugins: PluginManager) -> None:
        self.session = session
        self.plugins = plugins
        self._tasks: list[asyncio.Task[None]] = []
        self._sinks: list[OutputSink] = []
        self._sources: list[InputSource] = []

    async def open(self) -> None:
        pm = self.plugins
        config = self.session.shared.config
        if pm.pm.hook.mio_agent_event.get_hookimpls():
            sub = self.session.bus.subscribe("plugin-observers", maxsize=4096)
            self._tasks.append(asyncio.create_task(self._observe(sub)))
        for factory in pm.sinks(config):
            try:
                sink = await factory.open()
            except Exception as exc:  # a broken sink plugin is reported; the session goes on
                log.error("sink %r of a plugin could not open: %s", getattr(factory, "name", factory), exc)
                continue
            self._sinks.append(sink)
            sub = self.session.bus.subscribe(
                f"sink-{factory.name}", maxsize=1024, filter=lambda e: e.family == "output"
            )
            self._tasks.append(asyncio.create_task(self._feed_sink(sink, sub)))
        for sfactory in pm.sources(config):
            try:
                source = await sfactory.open()
            except Exception as exc:
                log.error(
                    "source %r of a plugin could not open: %s", getattr(sfactory, "name", sfactory), exc
                )
                continue
            self._sources.append(source)
            self._tasks.append(asyncio.create_task(self._read_source(source)))

    async def _observe(self, sub: Any) -> None:
        while True:
            try:
                ev = await sub.get()
            except SubscriptionClosed:
                return
            self.plugins.emit(ev)

    async def _feed_sink(self, sink: OutputSink, sub: Any) -> None:
        while True:
            try:
                ev = await sub.get()
            except SubscriptionClosed:
                return
            if isinstance(ev, OutputEvent):
                try:
                    await sink.send(ev)
                except Exception:
                    log.exception("a plugin's sink failed on %s", ev.type)

    async def _read_source(self, source: InputSource) -> None:
        try:
            async for ev in source.events():
                try:
                    self.session.submit(dataclasses.replace(ev, session=self.session.id))
                except MioAgentError as exc:
                    log.warning("a plugin's source sent what the session does not take: %s", exc)
        except Exception:
            log.exception("a plugin's source failed")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        closers = [s.aclose for s in self._sinks] + [s.aclose for s in self._sources]
        for aclose in closers:
            with contextlib.suppress(Exception):
                await aclose()
