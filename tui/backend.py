"""What the TUI talks to: a session in this process, or a `mio-agent serve` over WebSocket; events in, commands out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from mio_agent.events import Event

if TYPE_CHECKING:
    from mio_agent.runtime.net.client import MioClient
    from mio_agent.runtime.voice.session import Session

__all__ = ["Backend", "LocalBackend", "RemoteBackend"]

log = logging.getLogger(__name__)

DISPLAY_QUEUE = 4096
"""Events the TUI's subscription holds; a display wants the newest, so the oldest go when it falls behind."""


class Backend(Protocol):
    """The runtime as the TUI sees it: the same events and commands as a WebSocket client."""

    session_id: str
    capabilities: list[dict[str, Any]]
    plugins: list[str]
    description: str
    microphone: bool
    """True when the runtime listens to a microphone (push-to-talk and hands-free apply)."""
    notice: str
    """Something the user should know from the start (no microphone, and why); empty if nothing."""
    state: str
    """The session's state when the backend was made (later changes come as `session.state` events)."""

    def submit(self, ev: Event) -> None:
        """Send a command; raises mio_agent.exceptions.EventError if the session does not take it."""

    def events(self) -> AsyncIterator[Event]:
        """Every event of the session, until it ends."""

    async def close(self) -> None: ...


class LocalBackend:
    """A session of this process, alone (text and files) or with the voice app's devices around it."""

    def __init__(
        self,
        session: Session,
        description: str,
        *,
        microphone: bool = False,
        notice: str = "",
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.session = session
        self.session_id = session.id
        self.description = description
        self.microphone = microphone
        self.notice = notice
        self.state = session.state
        self._on_close = on_close
        shared = session.shared
        self.capabilities = [
            {
                "name": c.name,
                "description": c.description,
                "inputs": list(c.inputs),
                "outputs": list(c.outputs),
            }
            for c in shared.capabilities()
        ]
        self.plugins = [p.name for p in shared.plugins.plugins()]
        # never stall the session for the display; raw microphone audio and camera frames are not shown
        self._sub = session.bus.subscribe(
            "tui",
            maxsize=DISPLAY_QUEUE,
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
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            await on_close()


class RemoteBackend:
    """A session of a running `mio-agent serve`, through the Python client (no audio devices here)."""

    def __init__(self, client: MioClient) -> None:
        self.client = client
        self.session_id = client.session
        if client.welcome is None:
            raise RuntimeError("RemoteBackend needs a connected client (await client.connect() first)")
        self.capabilities = list(client.welcome.capabilities)
        self.plugins: list[str] = []
        self.description = f"{client.url} ({client.welcome.raw.get('server', '?')})"
        self.microphone = False
        self.notice = "attached to a server: type your turns (replies are not played here)"
        self.state = "connected"
        # commands go out in the order they were given: one sender, one queue
        self._outbox: asyncio.Queue[Event] = asyncio.Queue()
        self._sender = asyncio.create_task(self._send_all(), name="tui-remote-sender")

    def submit(self, ev: Event) -> None:
        self._outbox.put_nowait(ev)

    async def _send_all(self) -> None:
        while True:
            ev = await self._outbox.get()
            try:
                await self._send(ev)
            except Exception as exc:  # a lost connection also ends events(), which the app shows
                log.warning("could not send %s to %s: %s", ev.type, self.client.url, exc)

    async def _send(self, ev: Event) -> None:
        from mio_agent.events import AudioIn, ImageIn, Interrupt, InvokeCapability, Mute, TextIn

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
        elif isinstance(ev, AudioIn):
            await c.send_audio(ev.pcm, ev.sample_rate, channels=ev.channels)

    async def events(self) -> AsyncIterator[Event]:
        from mio_agent.events import ErrorEvent
        from mio_agent.runtime.net.client import ServerError

        async for item in self.client:
            if isinstance(item, Event):
                yield item
            elif isinstance(item, ServerError):
                yield ErrorEvent(session=self.session_id, turn=0, code=item.code, message=item.message)

    async def close(self) -> None:
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender
        with contextlib.suppress(Exception):
            await self.client.close()
