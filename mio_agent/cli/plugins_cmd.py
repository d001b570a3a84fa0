"""`mio-agent plugins`: the loaded plugins, where they came from, and the capabilities they add."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mio_agent.cli.common import add_config_argument, config_from_args

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "plugins",
        help="list plugins and the capabilities they contribute",
        description="Built-in plugins, then those of the entry-point group mio_agent.plugins "
        "(MIO_AGENT_DISABLE_PLUGIN_AUTOLOAD=1 turns those off; plugins.disabled in the config blocks any).",
    )
    p.add_argument("--json", action="store_true", help="one JSON object")
    add_config_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mio_agent.plugin import PluginManager

    manager = PluginManager.from_config(config_from_args(args))
    caps = manager.capabilities()
    if args.json:
        print(
            json.dumps(
                {
                    "plugins": [{"name": p.name, "origin": p.origin} for p in manager.plugins()],
                    "capabilities": [
                        {
                            "name": c.name,
                            "plugin": manager.capability_plugin(c.name),
                            "description": c.description,
                            "inputs": list(c.inputs),
                            "outputs": list(c.outputs),
                            "mode": c.mode,
                            "preset": c.preset,
                            "keywords": list(c.trigger.keywords),
                            "patterns": list(c.trigger.patterns),
                            "needs": list(c.trigger.needs),
                            "explicit_only": c.trigger.explicit_only,
                        }
                        for c in caps
                    ],
                }
            )
        )
        return 0
    print("plugins:")
    for p in manager.plugins():
        print(f"  {p.name:28s} {p.origin}")
    print("capabilities (invoke with /name):")
    for c in caps:
        io = f"{'+'.join(c.inputs) or '-'} -> {'+'.join(c.outputs)}"
        print(f"  {c.name:28s} {io:24s} {c.description}")
    return 0
