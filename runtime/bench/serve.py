"""`mio-agent bench serve`: N voice sessions on one real server, their replies decoded as rows of one
batched step (`engine.batch_sessions`) and, side by side in the same run, each on its own."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mio_agent.config import ServerConfig
from mio_agent.engine import ReplyOptions
from mio_agent.events import AudioOut, Event, TurnEnded
from mio_agent.exceptions import ConfigError, ProtocolError
from mio_agent.protocol import FrameKind
from mio_agent.runtime.bench.voice import USER_LINES, _pcm, _pct, _speech, shaped_resources
from mio_agent.runtime.net.client import MioClient, ServerError
from mio_agent.runtime.net.server import MioServer
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources

__all__ = ["bench_serve", "bench_serve_cli", "parse_sessions"]

REPLY = ReplyOptions(min_speech_codes=200, max_speech_codes=200, allow_text=False, allow_image=False)
"""Every reply speaks exactly this many codes, so every session's reply does the same work."""
QUICK_REPLY = ReplyOptions(min_speech_codes=48, max_speech_codes=48, allow_text=False, allow_image=False)
TURN_TIMEOUT_S = 600.0
"""How long one reply may take before the session gives up (a loaded CPU decodes slowly)."""
REFUSED = ("limit.server", "limit.sessions")


def parse_sessions(text: str | int | Sequence[int]) -> tuple[int, ...]:
    """`--sessions`: "8" or "1,8,32,64" as a tuple of positive counts (ConfigError otherwise)."""
    if isinstance(text, int):
        text = str(text)
    if not isinstance(text, str):
        text = ",".join(str(n) for n in text)
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or any(n < 1 for n in counts):
        raise ConfigError(
            f"--sessions takes a positive count or a comma-separated list of them (e.g. 1,4), not {text!r}"
        )
    return counts


def _resources(shape: str, device: str, batch: int) -> SharedResources:
    """The shape's model on `device` with `batch` rows of batched decode (0: each conversation
    alone), on the static cache either way, so that only the batching differs."""
    return shaped_resources(
        shape,
        device,
        {"engine.backend": "static", "engine.batch_sessions": batch, "router.transcribe": "never"},
    )


@dataclass(slots=True)
class _Reply:
    """One reply as its client saw it (monotonic seconds, same clock as the server's)."""

    speech_end: float
    first_audio: float | None = None
    ended: float | None = None
    audio_s: float = 0.0
    tokens: int = 0
    reason: str = ""


@dataclass(slots=True)
class _Client:
    replies: list[_Reply] = field(default_factory=list)
    refused: bool = False
    errors: list[str] = field(default_factory=list)


async def _stream(client: MioClient, pcm: bytes, stream: int, rng: random.Random) -> None:
    """`pcm` (16 kHz mono) as one audio stream at real time, in chunks of 20..100 ms, then `audio.end`."""
    await client.send({"type": "audio.start", "stream": stream, "sample_rate": 16000, "channels": 1})
    t0 = time.monotonic()
    sent = 0
    while sent < len(pcm):
        n = rng.randint(1, 5) * 640  # 20..100 ms
        await client.send_frame(FrameKind.AUDIO_IN, stream, pcm[sent : sent + n])
        sent += n
        # paced from the start, so the stream never drifts ahead of (or behind) real time
        await asyncio.sleep(max(0.0, t0 + sent / 32000 - time.monotonic()))
    await client.send({"type": "audio.end", "stream": stream})


async def _one_client(url: str, speech: list[bytes], turns: int, seed: int, start: asyncio.Event) -> _Client:
    """Connect in voice mode, wait for every client to be in, then speak `turns` turns, each to its reply's end."""
    out = _Client()
    client = MioClient(url, mode="voice")
    try:
        await client.connect()
    except ProtocolError as exc:
        out.refused = exc.code in REFUSED
        out.errors.append(f"{exc.code}: {exc}")
        return out
    rng = random.Random(seed)
    current: list[_Reply] = []
    ended = asyncio.Event()

    async def read() -> None:
        try:
            await read_all()
        except Exception as exc:  # the connection went: the turn being waited for will not end
            out.errors.append(f"connection: {type(exc).__name__}: {exc}")
            ended.set()

    async def read_all() -> None:
        while True:
            item = await client.next()
            now = time.monotonic()
            reply = current[-1] if current else None
            if isinstance(item, ServerError) or (isinstance(item, Event) and item.type == "error"):
                out.errors.append(str(getattr(item, "code", "?")))
            if reply is None or reply.ended is not None:
                continue
            if isinstance(item, AudioOut):
                reply.first_audio = reply.first_audio or now
                reply.audio_s += item.duration_s
            elif isinstance(item, TurnEnded):
                reply.ended, reply.tokens, reply.reason = now, item.tokens, item.reason
                ended.set()

    reader = asyncio.create_task(read())
    try:
        await start.wait()
        for turn in range(turns):
            ended.clear()
            # every client says the same line in a turn: their speech ends together and the replies overlap
            await _stream(client, speech[turn % len(speech)], turn + 1, rng)
            current.append(_Reply(speech_end=time.monotonic()))
            await asyncio.wait_for(ended.wait(), TURN_TIMEOUT_S)
            if reader.done():
                break
            out.replies.append(current[-1])
    except TimeoutError:
        out.errors.append("timeout: no turn.ended")
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await client.close()
    return out


def _busy_s(spans: list[tuple[float, float]]) -> float:
    """Seconds during which at least one reply was under way (the union of the spans)."""
    total, end = 0.0, -float("inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


async def _run_mode(
    shape: str, device: str, n: int, batch: int, turns: int, speech: list[bytes], reply: ReplyOptions
) -> dict[str, Any]:
    """Load, serve, and let `n` clients speak at once; the figures of this one (n, mode)."""
    import torch

    cuda = device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        gc.collect()  # the previous run's model and caches are gone before this run's peak is taken
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    shared = await asyncio.to_thread(_resources, shape, device, batch)
    load_s = time.perf_counter() - t0
    scheduler = getattr(shared.lm.fast, "scheduler", None)
    steps0 = scheduler.steps if scheduler is not None else 0
    rows0 = scheduler.rows_decoded if scheduler is not None else 0
    hub = SessionHub(shared)
    # room for more than n connections: a refusal here can only come from the batched rows
    server = MioServer(
        hub, ServerConfig(port=0, max_sessions=n + 4, max_sessions_per_client=n + 4), reply_options=reply
    )
    port = await server.start()
    url = f"ws://127.0.0.1:{port}/ws"
    start = asyncio.Event()
    try:
        tasks = [asyncio.create_task(_one_client(url, speech, turns, i, start)) for i in range(n)]
        # every client admitted (or refused) before anyone speaks: the n replies overlap
        while len(hub.sessions) + sum(t.done() for t in tasks) < n:
            await asyncio.sleep(0.01)
        start.set()
        clients = await asyncio.gather(*tasks)
    finally:
        await server.close()
        await hub.aclose()
        if scheduler is not None:
            scheduler.close()
    replies = [r for c in clients for r in c.replies]
    spans = [(r.speech_end, r.ended) for r in replies if r.ended is not None]
    busy = _busy_s(spans)
    tokens = sum(r.tokens for r in replies)
    rtf = []
    for c in clients:
        playing = sum(r.ended - r.first_audio for r in c.replies if r.first_audio and r.ended)
        if playing > 0:
            rtf.append(sum(r.audio_s for r in c.replies) / playing)
    first = [(r.first_audio - r.speech_end) * 1000 for r in replies if r.first_audio is not None]
    steps = (scheduler.steps - steps0) if scheduler is not None else None
    rows = (scheduler.rows_decoded - rows0) if scheduler is not None else None
    figures: dict[str, Any] = {
        "load_s": round(load_s, 1),
        "replies": len(replies),
        "replies_completed": sum(r.reason == "completed" for r in replies),
        "tokens": tokens,
        "tok_s": round(tokens / busy, 2) if busy > 0 else None,
        "voice_rtf_p5": round(_pct(rtf, 5), 3) if rtf else None,
        "voice_rtf_worst": round(min(rtf), 3) if rtf else None,
        "first_audio_p50_ms": round(_pct(first, 50), 1) if first else None,
        "first_audio_p99_ms": round(_pct(first, 99), 1) if first else None,
        "sessions_with_audio": sum(any(r.audio_s > 0 for r in c.replies) for c in clients),
        "refused": sum(c.refused for c in clients),
        "errors": sum(len(c.errors) for c in clients),
        "steps": steps,
        "rows_decoded": rows,
        "rows_per_step": round(rows / steps, 2) if steps and rows is not None else None,
        "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }
    samples = [e for c in clients for e in c.errors][:3]
    if samples:
        figures["error_samples"] = samples
    return figures


async def bench_serve(
    *,
    shape: str = "bench",
    device: str = "cpu",
    sessions: Sequence[int] = (1, 4),
    turns: int = 2,
    quick: bool = False,
) -> dict[str, Any]:
    """For each N in `sessions`: N voice clients on one server, batched then alone; one flat dict."""
    reply = QUICK_REPLY if quick else REPLY
    with tempfile.TemporaryDirectory() as tmp:
        speech = [_pcm(_speech(line, Path(tmp))) for line in USER_LINES]
    figures: dict[str, Any] = {
        "bench": "serve",
        "model": shape,
        "device": device,
        "cpu_threads": os.cpu_count() or 0,
        "sessions": list(sessions),
        "turns": turns,
        "reply_speech_codes": reply.min_speech_codes,
    }
    t0 = time.perf_counter()
    for n in sessions:
        for mode, batch in (("batched", n), ("alone", 0)):
            got = await _run_mode(shape, device, n, batch, turns, speech, reply)
            if mode == "alone":
                for key in ("steps", "rows_decoded", "rows_per_step"):
                    got.pop(key)
            figures |= {f"n{n}_{mode}_{k}": v for k, v in got.items()}
        batched, alone = figures[f"n{n}_batched_tok_s"], figures[f"n{n}_alone_tok_s"]
        figures[f"n{n}_tok_s_ratio"] = round(batched / alone, 3) if batched and alone else None
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    return figures


def bench_serve_cli(args: argparse.Namespace) -> dict[str, Any]:
    """Entry point of `mio-agent bench serve [--sessions 1,4] [--shape S] [--device D]` (`--quick`:
    sessions 1,2, one turn, short replies)."""
    quick = bool(getattr(args, "quick", False))
    given = getattr(args, "sessions", None)
    sessions = parse_sessions(given) if given is not None else (1, 2) if quick else (1, 4)
    return asyncio.run(
        bench_serve(
            shape=getattr(args, "shape", None) or "bench",
            device=str(getattr(args, "device", "cpu")),
            sessions=sessions,
            turns=1 if quick else 2,
            quick=quick,
        )
    )
