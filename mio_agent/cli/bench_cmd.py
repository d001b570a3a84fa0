"""`mio-agent bench`: run a benchmark and print its figures as one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

__all__ = ["BENCHMARKS_GROUP", "register", "run"]

BENCHMARKS_GROUP = "mio_agent.benchmarks"
"""Entry-point group of benchmarks outside the core (the runtime's voice and transport ones):
each is a function taking the parsed arguments and returning the figures as a dict."""


def _external() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=BENCHMARKS_GROUP)}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="run a benchmark (engine, codecs, voice, transport) and print one JSON line",
        description="Benchmarks measure side by side in one run and print ratios; see bench/README.md.",
    )
    p.add_argument("what", choices=["engine", "codecs", *sorted(_external())], help="what to measure")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer repeats and turns (a smoke run)")
    p.set_defaults(func=run)


def _engine(args: argparse.Namespace) -> dict[str, Any]:
    from mio_agent.benchmarks.engine import bench_engine
    from mio_agent.model.embedded import embedded_model_path
    from mio_agent.model.loading import load_model

    if not args.json:
        print("building / loading the benchmark model (a random MIO-format model of ~80 M parameters)...")
    path = embedded_model_path(seed=args.seed, preset="bench")
    lm = load_model(path, device=args.device, dtype="float32", progress=False)
    kwargs: dict[str, Any] = {"seed": args.seed}
    if args.quick:
        kwargs.update(turns=4, repeats=1, decode_tokens=32)
    return asyncio.run(bench_engine(lm, **kwargs))


def run(args: argparse.Namespace) -> int:
    external = _external()
    if args.what in external:
        figures = external[args.what].load()(args)
    elif args.what == "engine":
        figures = _engine(args)
    else:
        from mio_agent.benchmarks.codecs import bench_codecs

        figures = bench_codecs(device=args.device, quick=args.quick)
    if not args.json:
        for k, v in figures.items():
            print(f"  {k:28s} {v}")
    print(json.dumps(figures), file=sys.stdout)
    return 0
