"""A server whose sessions decode as rows of one batched step (`engine.batch_sessions`): replies, admission, eviction."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mio_agent.config import load_config
from mio_agent.runtime.voice.resources import SharedResources
from tests.runtime.net.test_server_hardening import handshake, recv_json, start, wait_until

ROWS = 2


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    cfg = load_config(
        None,
        overrides={
            "engine.max_new_tokens": 12,
            "engine.max_context": 512,
            "engine.batch_sessions": ROWS,
            "router.transcribe": "never",
            "engine.seed": 1,
        },
    )
    return SharedResources.load(cfg)


@pytest.fixture
async def served(shared: SharedResources, tmp_path: Path) -> AsyncIterator[tuple[object, str]]:
    srv, url = await start(shared, log_root=tmp_path)
    yield srv, url
    await srv.close()
    await srv.hub.aclose()


async def _reply(ws: object, text: str) -> str:
    await ws.send(json.dumps({"type": "text", "text": text}))  # type: ignore[attr-defined]
    while True:
        msg = await recv_json(ws)  # type: ignore[arg-type]
        if msg["type"] == "event" and msg["event"]["type"] == "turn.ended":
            return str(msg["event"]["reason"])


async def test_sessions_share_the_rows_and_one_more_is_refused_until_a_row_frees(
    served: tuple[object, str], shared: SharedResources, tmp_path: Path
) -> None:
    srv, url = served
    scheduler = shared.lm.fast.scheduler
    assert scheduler is not None and scheduler.free_rows == ROWS
    a, welcome_a = await handshake(url)
    b, welcome_b = await handshake(url)
    assert welcome_a["type"] == welcome_b["type"] == "welcome" and scheduler.free_rows == 0
    assert await _reply(a, "hello") in ("completed", "max_tokens", "stop")
    assert await _reply(b, "hi there") in ("completed", "max_tokens", "stop")
    # a third client: every row is taken by a connected session, so it is refused at once
    c, refused = await handshake(url)
    assert (refused["type"], refused["code"], refused["fatal"]) == ("error", "limit.server", True)
    assert "engine.batch_sessions" in refused["message"] and "try later" in refused["message"]
    await c.close()
    # the refused hello left no session log behind, and no row taken
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2 and scheduler.free_rows == 0
    # a client leaves (its session waits to be resumed): a new client gets that row
    await a.close()
    await wait_until(lambda: not srv.channels[welcome_a["session"]].attached)  # type: ignore[attr-defined]
    d, welcome_d = await handshake(url)
    assert welcome_d["type"] == "welcome" and welcome_a["session"] not in srv.channels  # type: ignore[attr-defined]
    assert await _reply(d, "and you?") in ("completed", "max_tokens", "stop")
    # the evicted session cannot be resumed
    e, gone = await handshake(url, resume={"session": welcome_a["session"], "last_seq": 0})
    assert gone["code"] == "session.gone"
    for ws in (b, d, e):
        await ws.close()


async def test_a_session_is_refused_while_the_decode_runs_below_the_rate_it_needs(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        overrides={
            "engine.max_new_tokens": 12,
            "engine.max_context": 512,
            "engine.batch_sessions": 4,
            # far above what any machine decodes: once measured, every new session is refused
            "engine.min_decode_tok_s": 1e9,
            "router.transcribe": "never",
            "engine.seed": 1,
        },
    )
    shared = SharedResources.load(cfg)
    srv, url = await start(shared, log_root=tmp_path)
    try:
        scheduler = shared.lm.fast.scheduler
        a, welcome = await handshake(url)
        assert welcome["type"] == "welcome"  # nothing measured yet: admitted
        assert scheduler.step_period_s is None
        await _reply(a, "hello")  # decode steps one after another: the rate is measured
        assert scheduler.step_period_s is not None and scheduler.step_period_s > 0
        b, refused = await handshake(url)
        assert (refused["type"], refused["code"]) == ("error", "limit.server")
        assert "engine.min_decode_tok_s" in refused["message"] and "tokens/s" in refused["message"]
        assert scheduler.free_rows == 3  # rows were free: the rate refused it
        await b.close()
        await a.close()
    finally:
        await srv.close()
        await srv.hub.aclose()
        scheduler.close()
