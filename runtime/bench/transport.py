"""`mio-agent bench transport`: many clients on loopback streaming audio in and out of one server."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
from typing import Any

import numpy as np

from mio_agent.config import ServerConfig, load_config
from mio_agent.engine import ReplyOptions
from mio_agent.events import AudioOut, Event, TurnEnded
from mio_agent.runtime.net.client import MioClient
from mio_agent.runtime.net.server import MioServer
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources

__all__ = ["bench_transport", "bench_transport_cli"]


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 3) if values else float("nan")


async def _one_client(url: str, seconds: float, latencies: list[float], totals: dict[str, float]) -> None:
    """Stream `seconds` of audio in real time (a quiet tone, so no turn starts from it), then ask
    one text turn and read its events and audio to the end."""
    rate = 16000
    t = np.arange(int(rate * seconds)) / rate
    pcm = (np.sin(2 * np.pi * 220 * t) * 300).astype("<i2").tobytes()
    client = MioClient(url)
    await client.connect()
    try:
        reader_done = asyncio.Event()

        async def read() -> None:
            while True:
                item = await client.next(timeout=900)
                if isinstance(item, Event):
                    # the event's server-side monotonic time vs ours: same process, same clock
                    latencies.append(time.monotonic() - item.t)
                if isinstance(item, AudioOut):
                    totals["audio_out_bytes"] += len(item.pcm)
                    totals["audio_out_b64_bytes"] += len(
                        json.dumps({"pcm": base64.b64encode(item.pcm).decode()})
                    )
                if isinstance(item, TurnEnded):
                    reader_done.set()
                    return

        reader = asyncio.create_task(read())
        await client.send_audio(pcm, rate, realtime=1.0)
        totals["audio_in_bytes"] += len(pcm)
        await client.send_text("hello")
        await asyncio.wait_for(reader_done.wait(), 900)
        await reader
    finally:
        await client.close()


async def bench_transport(*, clients: int = 200, seconds: float = 2.0) -> dict[str, Any]:
    """N clients at once; delivery latency, throughput, server CPU per session, bytes vs base64."""
    shared = SharedResources.load(
        load_config(
            None, overrides={"engine.max_new_tokens": 48, "router.transcribe": "never", "engine.seed": 0}
        )
    )
    hub = SessionHub(shared)
    server = MioServer(
        hub,
        ServerConfig(port=0, max_sessions=clients + 10, max_sessions_per_client=clients + 10),
        reply_options=ReplyOptions(
            min_speech_codes=10, max_speech_codes=10, allow_text=False, allow_image=False
        ),
    )
    port = await server.start()
    url = f"ws://127.0.0.1:{port}/ws"
    latencies: list[float] = []
    totals = {"audio_in_bytes": 0.0, "audio_out_bytes": 0.0, "audio_out_b64_bytes": 0.0}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(_one_client(url, seconds, latencies, totals) for _ in range(clients)))
    finally:
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        await server.close()
        await hub.aclose()
    return {
        "bench": "transport",
        "clients": clients,
        "cpu_threads": os.cpu_count() or 0,
        "audio_in_s_per_client": seconds,
        "events": len(latencies),
        "delivery_p50_ms": _pct([x * 1000 for x in latencies], 50),
        "delivery_p99_ms": _pct([x * 1000 for x in latencies], 99),
        "events_per_s": round(len(latencies) / wall, 1),
        "audio_in_mb_per_s": round(totals["audio_in_bytes"] / wall / 1e6, 3),
        "audio_out_mb_per_s": round(totals["audio_out_bytes"] / wall / 1e6, 3),
        "cpu_ms_per_session": round(cpu * 1000 / clients, 1),
        "audio_bytes_vs_base64_json": round(
            totals["audio_out_bytes"] / max(totals["audio_out_b64_bytes"], 1), 3
        ),
        "wall_s": round(wall, 1),
    }


def bench_transport_cli(args: argparse.Namespace) -> dict[str, Any]:
    """Entry point of `mio-agent bench transport` (`--quick`: 20 clients)."""
    quick = bool(getattr(args, "quick", False))
    return asyncio.run(bench_transport(clients=20 if quick else 200))
