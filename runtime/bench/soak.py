"""`mio-agent bench soak`: many WebSocket sessions for many minutes on one real server, with the MQTT
bridge on a real broker; every kind of turn, failing and hanging capabilities, barge-ins, dropped
connections resumed, a broker restart. Reports what must not happen (lost or duplicated messages,
tracebacks, leaks) rather than speed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mio_agent.config import MqttConfig, ServerConfig, load_config
from mio_agent.engine import ReplyOptions
from mio_agent.plugin import PluginManager
from mio_agent.runtime.bench.soak_clients import KINDS, Soaker, speech_pcm
from mio_agent.runtime.bench.soak_mqtt import Broker, CountingBridge, Subscriber, mosquitto, mqtt_tally
from mio_agent.runtime.bench.soak_plugin import SoakPlugin
from mio_agent.runtime.bench.soak_tally import Tallies, tally_logs
from mio_agent.runtime.net.server import MioServer
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources

__all__ = ["KINDS", "bench_soak", "bench_soak_cli"]

log = logging.getLogger(__name__)

TIMEOUT_S = 8.0
"""`plugins.timeout_s` of the soak: the hanging capability is stopped after this (it applies to
every capability: a normal one on a loaded machine takes seconds)."""
REAP_S = 1.0
"""How long the server keeps sessions whose client left, once every client has left (see `_reaped`)."""


# -- the run --------------------------------------------------------------------------------------
def _warm_default_executor(loop: asyncio.AbstractEventLoop, workers: int) -> None:
    """Give the loop a default executor with all its threads started, so the idle thread count
    already holds the ones that stay (a ThreadPoolExecutor keeps idle workers)."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="soak-default")
    barrier = threading.Barrier(workers)
    for f in [pool.submit(barrier.wait, 30) for _ in range(workers)]:
        f.result()
    loop.set_default_executor(pool)


def _tasks() -> int:
    current = asyncio.current_task()
    return sum(1 for t in asyncio.all_tasks() if t is not current and not t.done())


async def _until_true(cond: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


async def _settle(step: str, closing: Awaitable[Any], errors: list[str]) -> None:
    """Await one step of the teardown; a failure is noted (a figure), and the next step runs."""
    try:
        await closing
    except Exception as exc:
        errors.append(f"{step}: {type(exc).__name__}: {exc}"[:400])


async def _reaped(server: MioServer, timeout: float) -> bool:
    """Let the server's own reaper close the sessions whose clients left, after `REAP_S` instead
    of minutes (the bench lowers the module's keep time once every client has left)."""
    from mio_agent.runtime.net import server as server_module

    kept = server_module.KEEP_DETACHED_S
    server_module.KEEP_DETACHED_S = REAP_S
    try:
        return await _until_true(lambda: not server.channels, timeout)
    finally:
        server_module.KEEP_DETACHED_S = kept


async def bench_soak(*, minutes: float = 10.0, sessions: int = 8, seed: int = 0) -> dict[str, Any]:
    """`sessions` clients act for `minutes` on one server (and broker); one dict of figures."""
    import psutil

    proc = psutil.Process()
    loop = asyncio.get_running_loop()
    _warm_default_executor(loop, min(32, (os.cpu_count() or 1) + 4))
    cfg = load_config(
        None,
        overrides={"engine.max_new_tokens": 200, "engine.seed": seed, "plugins.timeout_s": TIMEOUT_S},
    )
    plugins = PluginManager(autoload=False, disabled=cfg.plugins.disabled)
    plugins.register(SoakPlugin(), "soak")
    plugins.load(cfg)
    shared = await asyncio.to_thread(SharedResources.load, cfg, plugins=plugins)
    figures: dict[str, Any] = {
        "bench": "soak",
        "minutes": minutes,
        "sessions": sessions,
        "seed": seed,
        "cpu_threads": os.cpu_count() or 0,
    }
    with (
        tempfile.TemporaryDirectory(prefix="mio-soak-") as tmp,
        tally_logs() as logs,
        contextlib.ExitStack() as cleanup,
    ):
        folder = Path(tmp)
        speech = await asyncio.to_thread(speech_pcm, folder)
        figures["speech"] = "espeak-ng" if shutil.which("espeak-ng") else "synthetic"
        exe = mosquitto()
        broker = Broker(exe, folder) if exe is not None else None
        hub = SessionHub(shared, log_root=folder / "sessions")
        server = MioServer(
            hub,
            ServerConfig(port=0, max_sessions=sessions + 4, max_sessions_per_client=sessions + 2),
            # a voice reply is one speech block of 16 to 40 frames: it must fit engine.max_new_tokens
            # (4 layers of codes and 3 markers), or the reply ends at once, empty
            reply_options=ReplyOptions(min_speech_codes=16, max_speech_codes=40, allow_image=False),
        )
        port = await server.start()
        await shared.plugins.startup(server)
        bridge: CountingBridge | None = None
        subscriber: Subscriber | None = None
        if broker is not None:
            cleanup.callback(broker.stop)  # also when the run fails
            await asyncio.to_thread(broker.start)
            subscriber = Subscriber(broker.port, "soak")
            cleanup.callback(subscriber.stop)
            subscriber.start()
            await _until_true(subscriber.ready.is_set, 30)
            bridge = CountingBridge(MqttConfig(enabled=True, port=broker.port, prefix="soak"), hub)
            await bridge.start()
            await asyncio.wait_for(bridge.connected.wait(), 30)
            figures["mqtt"] = "mosquitto"
        else:
            figures["mqtt"] = "skipped: mosquitto is not installed (apt-get install mosquitto)"
        threads_idle, tasks_idle = threading.active_count(), _tasks()

        url = f"ws://127.0.0.1:{port}/ws"
        tallies = Tallies()

        def server_seq(sid: str) -> int:
            channel = server.channels.get(sid)
            return channel.seq if channel is not None else 0

        marks: dict[str, float] = {}
        t0 = time.perf_counter()
        deadline = time.monotonic() + minutes * 60

        rss_by_tenth: list[float] = []
        mqtt_by_tenth: list[list[int]] = []

        async def watch() -> None:
            for tenth in range(1, 10):
                await asyncio.sleep(max(0.0, t0 + minutes * 6 * tenth - time.perf_counter()))
                rss_by_tenth.append(round(proc.memory_info().rss / 2**20, 1))
                if bridge is not None and subscriber is not None:
                    # queued, dropped, still waiting in the bridge, received by the subscriber
                    mqtt_by_tenth.append(
                        [len(bridge.queued), len(bridge.dropped), len(bridge.outbox), len(subscriber.got)]
                    )
                if tenth == 1:
                    marks["rss_mb_at_10pct"] = rss_by_tenth[0]
                    marks["fds_at_10pct"] = proc.num_fds()

        async def restart_broker() -> None:
            if broker is None:
                return
            await asyncio.sleep(minutes * 60 / 2)
            if bridge is not None:
                figures["mqtt_dropped_before_restart"] = len(bridge.dropped)
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(broker.start)
            figures["mqtt_broker_restarts"] = 1

        soakers = [
            Soaker(
                i,
                url,
                seed=seed,
                mode="voice" if i % 2 == 0 else "std",
                speech=speech,
                server_seq=server_seq,
                tallies=tallies,
            )
            for i in range(sessions)
        ]
        helpers = [asyncio.create_task(watch()), asyncio.create_task(restart_broker())]
        results = await asyncio.gather(*(s.run(deadline) for s in soakers), return_exceptions=True)
        await asyncio.gather(*helpers)
        wall = time.perf_counter() - t0
        failures = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        figures["rss_mb_at_10pct"] = marks.get("rss_mb_at_10pct")
        figures["fds_at_10pct"] = marks.get("fds_at_10pct")
        figures["rss_mb_at_end"] = round(proc.memory_info().rss / 2**20, 1)
        figures["fds_at_end"] = proc.num_fds()
        figures["rss_mb_by_tenth"] = [*rss_by_tenth, figures["rss_mb_at_end"]]

        # every client has left: the sessions are reaped, the bridge and subscriber are back
        after_leave = sum(max(0, server_seq(sid) - seq) for sid, seq in tallies.leave_seq.items())
        teardown_errors: list[str] = []
        reaped = await _reaped(server, 60)
        if bridge is not None and subscriber is not None:
            await _until_true(lambda: bridge.connected.is_set() and subscriber.ready.is_set(), 60)
            assert bridge is not None and subscriber is not None

            def delivered() -> bool:
                assert bridge is not None and subscriber is not None
                return (
                    not bridge.outbox
                    and mqtt_tally(bridge.queued, subscriber.got, bridge.dropped)["mqtt_lost"] == 0
                )

            await _until_true(delivered, 30, step=0.5)
        back = await _until_true(
            lambda: threading.active_count() <= threads_idle and _tasks() <= tasks_idle, 60
        )
        threads_after, tasks_after = threading.active_count(), _tasks()
        gc.collect()
        figures["rss_mb_after_reap"] = round(proc.memory_info().rss / 2**20, 1)
        mqtt: dict[str, Any] = {}
        if bridge is not None and subscriber is not None:
            mqtt = {**mqtt_tally(bridge.queued, subscriber.got, bridge.dropped)}
            mqtt["mqtt_dropped_on_bus"] = sum(sub.dropped for sub in bridge.subscriptions)
            mqtt["mqtt_bridge_connections"] = bridge.connections
            mqtt["mqtt_queued_dropped_waiting_received_by_tenth"] = mqtt_by_tenth
            mqtt.setdefault("mqtt_broker_restarts", figures.pop("mqtt_broker_restarts", 0))
            mqtt["mqtt_dropped_before_restart"] = figures.pop("mqtt_dropped_before_restart", None)
            await _settle("mqtt bridge close", bridge.aclose(), teardown_errors)
        await _settle("plugins shutdown", shared.plugins.shutdown(server), teardown_errors)
        await _settle("server close", server.close(), teardown_errors)
        await _settle("hub close", hub.aclose(), teardown_errors)

    kinds = {
        k: {
            "attempted": tallies.attempted[k],
            "completed": tallies.completed[k],
            "outcomes": dict(tallies.outcomes.get(k, {})),
        }
        for k in KINDS
    }
    figures |= {
        "turns_attempted": sum(tallies.attempted.values()),
        "turns_completed": sum(tallies.completed.values()),
        "kinds": kinds,
        "errors_by_code": dict(sorted(tallies.errors.items())),
        "resumes": tallies.resumes,
        "resume_missed": tallies.missed,
        "unasked_disconnects": dict(tallies.closes),
        "messages_received": tallies.received,
        "reply_audio_s": round(tallies.audio_bytes / 32000, 1),
        "text_deltas": tallies.text_deltas,
        "events_lost": tallies.lost,
        "events_duplicated": tallies.duplicated,
        "replay_gap_lost": tallies.gap_lost,
        "seq_out_of_order": tallies.out_of_order,
        "messages_after_leave": after_leave,
        "client_failures": failures,
        "tracebacks": logs.tracebacks,
        "traceback_samples": logs.samples,
        "log_errors": logs.errors,
        "log_error_samples": logs.error_samples,
        "log_warnings": dict(logs.warnings),
        "sessions_reaped": reaped,
        "teardown_errors": teardown_errors,
        "threads_idle": threads_idle,
        "threads_after": threads_after,
        "tasks_idle": tasks_idle,
        "tasks_after": tasks_after,
        "back_to_idle": back,
        **mqtt,
        "wall_s": round(wall, 1),
    }
    return figures


def bench_soak_cli(args: argparse.Namespace) -> dict[str, Any]:
    """Entry point of `mio-agent bench soak [--minutes N] [--sessions N] [--seed S]` (`--quick`:
    half a minute, 3 sessions)."""
    quick = bool(getattr(args, "quick", False))
    minutes = getattr(args, "minutes", None)
    sessions = getattr(args, "sessions", None)
    if isinstance(sessions, str):  # `--sessions` is text (bench serve takes a list): soak takes one count
        if not sessions.isdigit():
            from mio_agent.exceptions import ConfigError

            raise ConfigError(f"bench soak: --sessions takes one count (e.g. 8), not a list ({sessions!r})")
        sessions = int(sessions)

    async def main() -> dict[str, Any]:
        # SIGTERM stops the run through its cleanup (the broker it started goes too)
        task = asyncio.current_task()
        assert task is not None
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await bench_soak(
            minutes=float(minutes if minutes is not None else 0.5 if quick else 10.0),
            sessions=int(sessions if sessions is not None else 3 if quick else 8),
            seed=int(getattr(args, "seed", 0) or 0),
        )

    return asyncio.run(main())
