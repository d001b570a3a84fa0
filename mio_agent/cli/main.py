"""The `mio-agent` command: argument parsing and dispatch to one module per command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from mio_agent import __version__
from mio_agent.exceptions import MioAgentError

__all__ = ["COMMANDS_GROUP", "build_parser", "main"]

COMMANDS_GROUP = "mio_agent.commands"
"""Entry-point group of `register(subparsers)` functions adding commands (the runtime's, a plugin's)."""

log = logging.getLogger(__name__)


def _register_external(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands from other packages (the runtime, the TUI, plugins), found through entry points."""
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except ModuleNotFoundError as exc:
            # an optional part that is not installed: its commands are simply absent
            log.debug("commands %s not available: %s", ep.name, exc)
            continue
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            print(f"mio-agent: warning: commands of {ep.value} failed to load: {exc}", file=sys.stderr)
            continue
        register(sub)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one subparser per command)."""
    from mio_agent.cli import bench_cmd, chat_cmd, codec_cmds, doctor_cmd, invoke_cmd, plugins_cmd, prompt_cmd

    parser = argparse.ArgumentParser(
        prog="mio-agent",
        description="A streaming voice assistant and agent framework around the MIO any-to-any model.",
    )
    parser.add_argument("--version", action="version", version=f"mio-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (chat_cmd, prompt_cmd, invoke_cmd, doctor_cmd, plugins_cmd, bench_cmd):
        module.register(sub)
    codec_cmds.register_tokenize(sub)
    codec_cmds.register_detokenize(sub)
    _register_external(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except MioAgentError as exc:
        # user-caused errors are one line naming what was wrong, never a traceback
        print(f"mio-agent {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
