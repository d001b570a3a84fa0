"""`mio-agent tui`: the terminal assistant, on its own runtime or attached to a running server."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add `tui` to the `mio-agent` command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "tui",
        help="the terminal assistant (Textual): type or talk, see replies, images and latencies",
        description="The terminal assistant, on the runtime of `mio-agent run` (microphone, speaker, "
        "camera; typed turns only if there is no sound card). Escape interrupts, Ctrl+T talks (push-to-talk) "
        "or turns the microphone on and off (hands-free), F2 switches between the two, / starts a command "
        "(Tab completes), Ctrl+P opens the command palette, Ctrl+S exports, Ctrl+O lists past sessions, "
        "Ctrl+Q quits.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded model)")
    p.add_argument(
        "--connect", metavar="URL", help="attach to a running `mio-agent serve` (ws://HOST:PORT/ws)"
    )
    p.add_argument("--token", help="the server's token (with --connect)")
    p.add_argument("--session-dir", metavar="DIR", help="where session logs go (default: session.dir)")
    p.add_argument("--resume", metavar="SESSION", help="reopen a past session of the session folder")
    p.add_argument("--sessions", action="store_true", help="list past sessions and exit")
    p.add_argument("--export", metavar="SESSION", help="export a past session as Markdown and exit")
    p.add_argument("--export-dir", metavar="DIR", default=".", help="where exports go (default: here)")
    p.add_argument(
        "--mode",
        choices=("hands-free", "push-to-talk"),
        default="hands-free",
        help="how the microphone listens",
    )
    p.add_argument("--no-audio", action="store_true", help="no microphone or speaker: typed turns only")
    p.add_argument("--input-device", metavar="X", help="microphone: name (or part of one) or index")
    p.add_argument("--output-device", metavar="Y", help="speaker: name (or part of one) or index")
    p.add_argument("--mic-file", metavar="F", help="read the microphone from a WAV file")
    p.add_argument("--speaker-file", metavar="F", help="write the speaker to a WAV file")
    p.add_argument("--camera", metavar="N", help="camera index or video file whose keyframes join your turns")
    p.add_argument("--no-echo-cancel", action="store_true", help="echo cancellation off (headphones)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mio_agent.config import load_config
    from mio_agent.exceptions import ConfigError
    from mio_agent.tui.images import detect_graphics
    from mio_agent.tui.launch import AudioChoice, LocalLauncher, remote_backend_factory
    from mio_agent.tui.sessions import export_session, list_sessions, past_events

    cfg = load_config(args.config)
    root = Path(args.session_dir).expanduser() if args.session_dir else cfg.session.resolved_dir()
    export_dir = Path(args.export_dir).expanduser()
    if args.sessions:
        sessions = list_sessions(root)
        print("\n".join(s.line() for s in sessions) if sessions else f"no sessions yet in {root}")
        return 0
    if args.export:
        print(export_session(root, args.export, export_dir))
        return 0
    if args.connect and args.resume:
        raise ConfigError("--resume reopens a local session; with --connect the server keeps the sessions")
    from mio_agent.tui.app import MioApp

    graphics = detect_graphics()
    if args.connect:
        remote = MioApp(
            remote_backend_factory(args.connect, args.token),
            export_dir=export_dir,
            graphics=graphics,
            mode=args.mode,
        )
        remote.run()
        return 0
    audio = AudioChoice(
        enabled=not args.no_audio,
        input_device=args.input_device,
        output_device=args.output_device,
        mic_file=Path(args.mic_file) if args.mic_file else None,
        speaker_file=Path(args.speaker_file) if args.speaker_file else None,
        camera=args.camera if args.camera is not None else cfg.camera.device,
        echo_cancel=cfg.audio.echo_cancel and not args.no_echo_cancel,
    )
    launcher = LocalLauncher(cfg, root, audio)
    resume: str | None = args.resume
    while True:
        # the app returns a session to resume when one is chosen on its sessions screen
        app = MioApp(
            launcher.factory(resume),
            export_dir=export_dir,
            session_root=root,
            past=past_events(root, resume) if resume else (),
            graphics=graphics,
            mode=args.mode,
        )
        resume = app.run()
        if resume is None:
            return 0
