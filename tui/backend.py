"""What the TUI talks to: a session in this process, or a `mio-agent serve` over WebSocket; events in, commands out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from mio_agent.events import Event

if TYPE_CHECKING:
    from mio_agent.runtime.client import MioClient
    from mio_agent.runtime.session import Session

__all__ = ["Backend", "LocalBackend", "RemoteBackend"]


class Backend(Protocol):
    """The runtime as the TUI sees it: the same events and commands as a WebSocket client."""

    session_id: str
    capabilities: list[dict[str, Any]]
    description: str

    def submit(self, ev: Event) -> None: ...

    def events(self) -> AsyncIterator[Event]: ...

    async def close(self) -> None: ...


class LocalBackend:
    """A session of this process (with or without audio devices around it)."""

    def __init__(self, session: Session, description: str) -> None:
        self.session = session
        self.session_id = session.id
        self.description = description
        self.capabilities = [
            {
                "name": c.name,
                "description": c.description,
                "inputs": list(c.inputs),
                "outputs": list(c.outputs),
            }
            for c in session.res.capabilities()
        ]
        # a display wants the newest: drop the oldest when it falls behind, never stall the session
        self._sub = session.bus.subscribe(
            "tui",
            maxsize=2048,
            policy="drop_oldest",
            filter=lambda e: e.type not in ("audio.in", "video.frame"),
        )

    def submit(self, ev: Event) -> None:
        self.session.submit(ev)

    async def events(self) -> AsyncIterator[Event]:
        async for ev in self._sub:
            yield ev

    async def close(self) -> None:
        self._sub.close()


class RemoteBackend:
    """A session of a running `mio-agent serve`, through the Python client."""

    def __init__(self, client: MioClient) -> None:
        self.client = client
        self.session_id = client.session
        assert client.welcome is not None
        self.capabilities = list(client.welcome.capabilities)
        self.description = f"{client.url} ({client.welcome.raw.get('server', '?')})"
        self._tasks: set[asyncio.Task[Any]] = set()

    def submit(self, ev: Event) -> None:
        task = asyncio.ensure_future(self._send(ev))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, ev: Event) -> None:
        from mio_agent.events import ImageIn, Interrupt, InvokeCapability, Mute, TextIn

        c = self.client
        if isinstance(ev, TextIn):
            await c.send_text(ev.text)
        elif isinstance(ev, ImageIn):
            await c.send_image(ev.data, ev.name)
        elif isinstance(ev, InvokeCapability):
            stream = await c.send_image(ev.image, "invoke") if ev.image else None
            await c.invoke(ev.name, ev.text, image_stream=stream)
        elif isinstance(ev, Interrupt):
            await c.interrupt()
        elif isinstance(ev, Mute):
            await c.mute(ev.muted)

    async def events(self) -> AsyncIterator[Event]:
        from mio_agent.events import ErrorEvent
        from mio_agent.runtime.client import ServerError

        async for item in self.client:
            if isinstance(item, Event):
                yield item
            elif isinstance(item, ServerError):
                yield ErrorEvent(session=self.session_id, turn=0, code=item.code, message=item.message)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()
