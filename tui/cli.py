"""`mio-agent tui`: the terminal assistant, on its own runtime or attached to a running server."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "tui",
        help="the terminal assistant (Textual): type or talk, see replies, images and latencies",
        description="The terminal assistant. Escape interrupts, Ctrl+T turns the microphone on or off, "
        "Ctrl+P opens the command palette, / starts a command (Tab completes), Ctrl+Q quits.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded model)")
    p.add_argument(
        "--connect", metavar="URL", help="attach to a running `mio-agent serve` (ws://HOST:PORT/ws)"
    )
    p.add_argument("--token", help="the server's token (with --connect)")
    p.add_argument("--session-dir", metavar="DIR", help="where session logs go (default: session.dir)")
    p.add_argument("--resume", metavar="SESSION", help="reopen a past session of the session folder")
    p.add_argument("--sessions", action="store_true", help="list past sessions and exit")
    p.add_argument("--export-dir", metavar="DIR", default=".", help="where /export writes (default: here)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mio_agent.config import load_config
    from mio_agent.exceptions import ConfigError
    from mio_agent.tui.launch import list_sessions, local_backend_factory, past_events, remote_backend_factory

    cfg = load_config(args.config)
    root = Path(args.session_dir).expanduser() if args.session_dir else cfg.session.resolved_dir()
    if args.sessions:
        for line in list_sessions(root):
            print(line)
        return 0
    if args.connect and args.resume:
        raise ConfigError("--resume reopens a local session; with --connect the server keeps sessions")
    past = past_events(root, args.resume) if args.resume else []
    make = (
        remote_backend_factory(args.connect, args.token)
        if args.connect
        else local_backend_factory(cfg, root, args.resume)
    )
    from mio_agent.tui.app import MioApp

    MioApp(make, export_dir=Path(args.export_dir), past=past).run()
    return 0
