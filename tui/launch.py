"""Starting the TUI's backend: a local runtime (sessions logged, audio devices if there are any) or a server."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from mio_agent.config import Config
from mio_agent.events import Event
from mio_agent.exceptions import StoreError
from mio_agent.tui.backend import Backend, LocalBackend, RemoteBackend

__all__ = ["list_sessions", "local_backend_factory", "past_events", "remote_backend_factory"]


def list_sessions(root: Path) -> list[str]:
    """One line per past session under `root`, newest first: id, mode, turns."""
    if not root.is_dir():
        return [f"no sessions yet in {root}"]
    lines = []
    for folder in sorted((p for p in root.iterdir() if (p / "events.jsonl").exists()), reverse=True):
        meta = json.loads((folder / "session.json").read_text()) if (folder / "session.json").exists() else {}
        with open(folder / "events.jsonl", encoding="utf-8") as f:
            turns = sum(1 for line in f if '"type":"turn.ended"' in line)
        lines.append(f"{folder.name}  {meta.get('mode', '?'):5}  {turns} turn(s)")
    return lines or [f"no sessions yet in {root}"]


def past_events(root: Path, session: str) -> list[Event]:
    """The displayable events of a past session (for showing it again when resuming)."""
    from mio_agent.session_log import read_events

    folder = root / session
    if not (folder / "events.jsonl").exists():
        raise StoreError(f"no session {session} in {root}; see mio-agent tui --sessions")
    keep = (
        "user.turn",
        "user.transcript",
        "turn.started",
        "text.delta",
        "image.out",
        "turn.ended",
        "audio.out",
    )
    return [ev for ev in read_events(folder) if isinstance(ev, Event) and ev.type in keep]


def local_backend_factory(
    cfg: Config, root: Path | None, resume: str | None
) -> Callable[[], Awaitable[Backend]]:
    async def make() -> Backend:
        import asyncio

        from mio_agent.runtime.hub import SessionHub
        from mio_agent.runtime.resources import Resources

        res = await asyncio.to_thread(Resources.load, cfg)
        hub = SessionHub(res, log_root=root)
        session = await hub.open(resume)
        where = cfg.model.path or "embedded tiny model (replies are noise)"
        return LocalBackend(session, f"{where} on {res.lm.device}")

    return make


def remote_backend_factory(url: str, token: str | None) -> Callable[[], Awaitable[Backend]]:
    async def make() -> Backend:
        from mio_agent.runtime.client import MioClient

        client = MioClient(url, token=token)
        await client.connect()
        return RemoteBackend(client)

    return make
