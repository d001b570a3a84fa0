"""Protocols of the input sources and output sinks that plugins contribute (implemented in runtime/)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from mio_agent.events import InputEvent, OutputEvent

__all__ = ["InputSource", "OutputSink", "SinkFactory", "SourceFactory"]


@runtime_checkable
class InputSource(Protocol):
    """An open input: microphone, camera, a socket, a file; its events end when it is closed."""

    def events(self) -> AsyncIterator[InputEvent]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class OutputSink(Protocol):
    """An open output: speakers, a screen, a client; `send` may drop what it cannot show."""

    async def send(self, event: OutputEvent) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SourceFactory(Protocol):
    """What `mio_agent_sources` returns: a named recipe that opens a source when the app starts."""

    name: str

    async def open(self) -> InputSource: ...


@runtime_checkable
class SinkFactory(Protocol):
    """What `mio_agent_sinks` returns: a named recipe that opens a sink when the app starts."""

    name: str

    async def open(self) -> OutputSink: ...
