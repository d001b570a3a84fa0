"""`mio-agent bench`: run a benchmark and print its figures as one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

__all__ = ["BENCHMARKS_GROUP", "register", "run"]

BENCHMARKS_GROUP = "mio_agent.benchmarks"
"""Entry-point group of benchmarks outside the core (the runtime's voice, transport and soak ones):
each is a function taking the parsed arguments and returning the figures as a dict."""


def _external() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=BENCHMARKS_GROUP)}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="run a benchmark (engine, codecs, voice, transport, soak) and print one JSON line",
        description="Benchmarks measure side by side in one run and print ratios; see bench/README.md.",
    )
    p.add_argument("what", choices=["engine", "codecs", *sorted(_external())], help="what to measure")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer repeats and turns (a smoke run)")
    p.add_argument(
        "--shape",
        choices=["embedded", "bench", "mio-7b"],
        default=None,
        help="engine, voice: the model's shape (mio-7b: MIO-7B's sizes, random weights drawn on the device; "
        "default: bench for engine, embedded for voice)",
    )
    p.add_argument(
        "--backend", choices=["auto", "static", "dynamic"], default="auto", help="engine: the cache backend"
    )
    p.add_argument("--compile", action="store_true", help="engine: torch.compile the static decode step")
    p.add_argument("--dtype", default="auto", help="engine: float32, bfloat16, float16 (auto: the shape's)")
    p.add_argument("--minutes", type=float, default=None, help="soak: how long the clients act (default 10)")
    p.add_argument(
        "--sessions",
        type=_sessions,
        default=None,
        help="soak: concurrent client sessions, one number (default 8); serve: the counts of sessions "
        "to measure, e.g. 1,8,32,64 (default 1,4)",
    )
    p.set_defaults(func=run)


def _engine(args: argparse.Namespace) -> dict[str, Any]:
    import time

    from mio_agent.benchmarks.engine import bench_engine
    from mio_agent.benchmarks.engine_fast import bench_engine_fast
    from mio_agent.model.fast_path import prepare_fast_path
    from mio_agent.model.shaped import describe_shape, shaped_model

    args.shape = args.shape or "bench"
    if not args.json:
        print(f"building the {args.shape} model (random MIO-format weights) on {args.device}...")
    t0 = time.perf_counter()
    lm = shaped_model(args.shape, device=args.device, dtype=args.dtype, seed=args.seed)
    build_s = time.perf_counter() - t0
    static = args.backend == "static" or (args.backend == "auto" and lm.device.type == "cuda")
    if static:
        # compile and capture before anything is timed, as `run` and `serve` do at load
        prepare_fast_path(lm, positions=lm.max_positions, compile=args.compile)
    big = args.shape == "mio-7b"
    kwargs: dict[str, Any] = {"seed": args.seed, "backend": args.backend}
    fast_kwargs: dict[str, Any] = {"backend": args.backend}
    if args.quick:
        kwargs.update(turns=4, repeats=1, decode_tokens=32)
        fast_kwargs.update(text_tokens=32, voice_frames=10, repeats=1)
    elif big:
        # the eager baselines decode at a tenth of the engine's speed: fewer of their tokens
        kwargs.update(turns=6, repeats=1, decode_tokens=64)
    figures = asyncio.run(bench_engine(lm, **kwargs))
    # the short decode that decode_vs_forward compares; engine_tok_s below is the longer text reply
    figures["decode_tok_s"] = figures.pop("engine_tok_s")
    figures.update(asyncio.run(bench_engine_fast(lm, **fast_kwargs)))
    figures.update({"shape": args.shape, "build_s": round(build_s, 1), "sizes": describe_shape(args.shape)})
    return figures


def _sessions(text: str) -> str:
    """`--sessions`: one positive count ("8") or a comma-separated list of them ("1,8,32,64")."""
    parts = text.replace(" ", "").split(",")
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected a positive count or a comma-separated list of them (e.g. 8 or 1,8,32,64), not {text!r}"
        )
    return ",".join(str(int(part)) for part in parts)


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
