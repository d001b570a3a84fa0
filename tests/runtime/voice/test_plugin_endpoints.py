"""Plugins inside a running session: observers see every event, sinks get outputs, sources feed inputs,
start-up and shut-down hooks run; a failing sink does not stop the session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from mio_agent import hookimpl
from mio_agent.config import Config, load_config
from mio_agent.events import Event, InputEvent, OutputEvent, TextIn, TurnEnded
from mio_agent.plugin import PluginManager
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources


class Probe:
    """A plugin implementing the observer, sink, source and life-cycle hooks."""

    def __init__(self) -> None:
        self.observed: list[str] = []
        self.sunk: list[str] = []
        self.started: list[object] = []
        self.stopped: list[object] = []
        # set when the turn's end reached the observer hook and the working sink; each plugin is fed
        # from its own subscription, so that can be after the test saw the event on the bus
        self.observed_end = asyncio.Event()
        self.sunk_end = asyncio.Event()

    @hookimpl
    def mio_agent_event(self, event: Event) -> None:
        self.observed.append(event.type)
        if event.type == "turn.ended":
            self.observed_end.set()

    @hookimpl
    def mio_agent_sinks(self, config: Config) -> list[Any]:
        probe = self

        class Sink:
            async def send(self, event: OutputEvent) -> None:
                probe.sunk.append(event.type)
                if event.type == "turn.ended":
                    probe.sunk_end.set()

            async def aclose(self) -> None:
                probe.sunk.append("closed")

        class Broken:
            async def send(self, event: OutputEvent) -> None:
                raise RuntimeError("this sink always fails")

            async def aclose(self) -> None:
                return None

        class Factory:
            def __init__(self, name: str, cls: type) -> None:
                self.name, self.cls = name, cls

            async def open(self) -> Any:
                return self.cls()

        return [Factory("probe-sink", Sink), Factory("broken-sink", Broken)]

    @hookimpl
    def mio_agent_sources(self, config: Config) -> list[Any]:
        class Source:
            async def events(self) -> AsyncIterator[InputEvent]:
                yield TextIn(session="", turn=0, text="hello from a plugin source")

            async def aclose(self) -> None:
                return None

        class Factory:
            name = "probe-source"

            async def open(self) -> Any:
                return Source()

        return [Factory()]

    @hookimpl
    def mio_agent_startup(self, app: object) -> None:
        self.started.append(app)

    @hookimpl
    def mio_agent_shutdown(self, app: object) -> None:
        self.stopped.append(app)


async def test_a_plugin_observes_sinks_and_feeds_a_session() -> None:
    cfg = load_config(None, overrides={"engine.max_new_tokens": 30, "router.transcribe": "never"})
    probe = Probe()
    plugins = PluginManager(autoload=False)
    plugins.register(probe, "probe")
    plugins.load(cfg)
    shared = SharedResources.load(cfg, plugins=plugins)
    hub = SessionHub(shared)
    session = await hub.open()
    sub = session.bus.subscribe("t", maxsize=1000, filter=lambda e: isinstance(e, TurnEnded))
    # the source's text became a turn, which completed although one sink fails on every event
    ended = await asyncio.wait_for(sub.get(), 60)
    assert isinstance(ended, TurnEnded) and ended.reason == "completed"
    await asyncio.wait_for(asyncio.gather(probe.observed_end.wait(), probe.sunk_end.wait()), 60)
    assert "text.in" in probe.observed and "turn.ended" in probe.observed
    assert "turn.ended" in probe.sunk and "text.in" not in probe.sunk  # sinks get outputs only
    await shared.plugins.startup(hub)
    await shared.plugins.shutdown(hub)
    assert probe.started == [hub] and probe.stopped == [hub]
    await hub.aclose()
    assert probe.sunk[-1] == "closed"
