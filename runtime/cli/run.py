"""The runtime's commands: `run` (the hands-free voice loop), `devices` and `replay`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from mio_agent.cli.common import output_file, output_folder
from mio_agent.config import Config, load_config
from mio_agent.exceptions import ConfigError

__all__ = ["register"]


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def _session_dir(args: argparse.Namespace, cfg: Config) -> Path:
    return Path(args.session_dir).expanduser() if args.session_dir else cfg.session.resolved_dir()


def register(sub: Any) -> None:
    """Add `run`, `devices` and `replay` to the `mio-agent` command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="the hands-free voice assistant: microphone, speaker, camera",
        description="Talk with MIO hands-free. Speak; it answers aloud; speak over it to interrupt. "
        "Ctrl-C ends the session (its log stays in the session folder).",
    )
    p.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded model)")
    p.add_argument(
        "--input-device",
        metavar="X",
        help="microphone: name (or part of one) or index; see mio-agent devices",
    )
    p.add_argument("--output-device", metavar="Y", help="speaker: name (or part of one) or index")
    p.add_argument(
        "--camera", metavar="N", help="camera index, or a video file, whose keyframes join your turns"
    )
    p.add_argument("--mic-file", metavar="F", help="read the microphone from a WAV file instead of a device")
    p.add_argument("--speaker-file", metavar="F", help="write the speaker to a WAV file instead of a device")
    p.add_argument(
        "--fast", action="store_true", help="with files: process as fast as possible, not in real time"
    )
    p.add_argument(
        "--session-dir", metavar="DIR", help="where the session log goes (default: config session.dir)"
    )
    p.add_argument("--turns", type=int, metavar="N", help="stop after N agent turns")
    p.add_argument("--resume", metavar="SESSION", help="continue the log of an earlier session id")
    p.add_argument("--no-status", action="store_true", help="no live status line")
    p.add_argument(
        "--no-echo-cancel", action="store_true", help="turn echo cancellation off (e.g. with headphones)"
    )
    p.set_defaults(func=_run)

    d: argparse.ArgumentParser = sub.add_parser("devices", help="list microphones and speakers")
    d.set_defaults(func=_devices)

    r: argparse.ArgumentParser = sub.add_parser(
        "replay",
        help="feed a recorded session's input through the pipeline again and report what changed",
        description="Replays the microphone audio, text and commands of a recorded session through a new "
        "session (no devices) and compares turns, routes, end reasons and timings. Exit status 1 if they differ.",
    )
    r.add_argument("session", metavar="SESSION", help="a session id (in --session-dir) or a session folder")
    r.add_argument("--config", metavar="FILE", help="YAML config (use the one the session ran with)")
    r.add_argument("--session-dir", metavar="DIR", help="where sessions are (default: config session.dir)")
    r.add_argument("--fast", action="store_true", help="as fast as possible instead of in real time")
    r.set_defaults(func=_replay)


def _run(args: argparse.Namespace) -> int:
    from mio_agent.runtime.app import AppOptions, VoiceApp, print_summary
    from mio_agent.runtime.audio.files import FileMicSource, FileSpeakerSink
    from mio_agent.runtime.audio.pyaudio_io import MicrophoneSource, SpeakerSink
    from mio_agent.runtime.voice.resources import SharedResources

    cfg = _config(args)
    if args.turns is not None and args.turns < 1:
        raise ConfigError(f"--turns must be 1 or more, got {args.turns}")
    if args.fast and not args.mic_file:
        raise ConfigError("--fast needs --mic-file: a live microphone cannot run faster than real time")
    session_dir = output_folder(_session_dir(args, cfg), "--session-dir")
    speaker_file = output_file(args.speaker_file, "--speaker-file") if args.speaker_file else None
    camera = args.camera if args.camera is not None else cfg.camera.device

    async def main() -> int:
        mic: Any = (
            FileMicSource(args.mic_file, fast=args.fast, pad_s=1.0)
            if args.mic_file
            else MicrophoneSource(args.input_device or cfg.audio.input_device)
        )
        speaker: Any = (
            FileSpeakerSink(speaker_file, fast=args.fast)
            if speaker_file is not None
            else SpeakerSink(args.output_device or cfg.audio.output_device)
        )
        shared = await asyncio.to_thread(SharedResources.load, cfg, quiet=False)
        options = AppOptions(
            session_dir=session_dir,
            camera=camera,
            fast=args.fast,
            turns=args.turns,
            status=not args.no_status,
            echo_cancel=cfg.audio.echo_cancel and not args.no_echo_cancel,
            session_id=args.resume,
        )
        app = VoiceApp(shared, mic, speaker, options)
        rc = await app.run()
        print_summary(app, sys.stderr)
        return rc

    return asyncio.run(main())


def _devices(args: argparse.Namespace) -> int:
    from mio_agent.runtime.audio.devices import format_devices, list_devices

    print(format_devices(list_devices()))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from mio_agent.runtime.replay import replay_session
    from mio_agent.runtime.voice.resources import SharedResources

    cfg = _config(args)
    given = Path(args.session).expanduser()
    folder = given if given.is_dir() else _session_dir(args, cfg) / args.session
    if not folder.is_dir():
        raise ConfigError(f"no session {args.session!r}: not a folder, and not in {_session_dir(args, cfg)}")
    shared = SharedResources.load(cfg)
    report = asyncio.run(replay_session(shared, folder, fast=args.fast))
    print("\n".join(report.lines()))
    return 0 if report.same else 1
