"""Capabilities inside a live session: a crashing, a hanging and a garbage-yielding plugin each end
their turn with an error and the session answers the next turn; an interrupt stops a long job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mio_agent import hookimpl
from mio_agent.capability import Capability, CapabilityContext
from mio_agent.config import load_config
from mio_agent.events import ErrorEvent, Interrupt, InvokeCapability, OutputEvent, TextIn, TurnEnded
from mio_agent.plugin import PluginManager
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.runtime.voice.session import Session

STOPPED: list[str] = []


class _Crash(Capability):
    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        yield ctx.progress(0, 1, "about to fail")
        raise RuntimeError("boom")


class _Garbage(Capability):
    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        yield "not an event"  # type: ignore[misc]


class _Slow(Capability):
    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        try:
            for step in range(1000):
                yield ctx.progress(step, 1000, "denoising")
                await asyncio.sleep(0.05)
        finally:
            STOPPED.append(ctx.capability)


def _cap(cls: type[Capability], name: str) -> Capability:
    return cls(name=name, description=f"{name} (test)", inputs=("text",), outputs=("text",), mode="std",
               preset="text", prompt="{text}")  # fmt: skip


class Misbehaving:
    @hookimpl
    def mio_agent_capabilities(self) -> list[Capability]:
        return [_cap(_Crash, "crash"), _cap(_Garbage, "garbage"), _cap(_Slow, "slow_job")]


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    cfg = load_config(None, overrides={"engine.max_new_tokens": 30, "router.transcribe": "never"})
    pm = PluginManager(autoload=False)
    pm.register(Misbehaving(), "misbehaving")
    pm.load(cfg)
    return SharedResources.load(cfg, plugins=pm)


async def _turn(session: Session, sub: Any, ev: Any) -> list[Any]:
    session.submit(ev)
    got = []
    while True:
        e = await asyncio.wait_for(sub.get(), 60)
        got.append(e)
        if isinstance(e, TurnEnded):
            return got


@pytest.mark.parametrize(("name", "code"), [("crash", "capability.error"), ("garbage", "capability.garbage")])
async def test_a_misbehaving_plugin_is_an_error_and_the_session_goes_on(
    shared: SharedResources, name: str, code: str
) -> None:
    async with Session(shared) as session:
        sub = session.bus.subscribe("t", maxsize=10_000)
        events = await _turn(session, sub, InvokeCapability(session=session.id, turn=0, name=name, text="go"))
        errors = [e for e in events if isinstance(e, ErrorEvent)]
        assert errors and errors[0].code == code
        assert events[-1].reason == "error"
        after = await _turn(session, sub, TextIn(session=session.id, turn=0, text="still there?"))
        assert after[-1].reason == "completed"


async def test_a_hanging_plugin_is_stopped_at_its_time_limit() -> None:
    cfg = load_config(
        None, overrides={"engine.max_new_tokens": 30, "router.transcribe": "never", "plugins.timeout_s": 0.5}
    )
    pm = PluginManager(autoload=False)
    pm.register(Misbehaving(), "misbehaving")
    pm.load(cfg)
    async with Session(SharedResources.load(cfg, plugins=pm)) as session:
        sub = session.bus.subscribe("t", maxsize=10_000)
        events = await _turn(session, sub, InvokeCapability(session=session.id, turn=0, name="slow_job"))
        assert any(isinstance(e, ErrorEvent) and e.code == "capability.timeout" for e in events)
        after = await _turn(session, sub, TextIn(session=session.id, turn=0, text="next"))
        assert after[-1].reason == "completed"


async def test_an_interrupt_stops_a_long_capability_job(shared: SharedResources) -> None:
    STOPPED.clear()
    async with Session(shared) as session:
        sub = session.bus.subscribe("t", maxsize=10_000)
        session.submit(InvokeCapability(session=session.id, turn=0, name="slow_job", text="a big picture"))
        while True:
            e = await asyncio.wait_for(sub.get(), 30)
            if e.type == "capability.progress" and e.step >= 3:
                break
        session.submit(Interrupt(session=session.id, turn=0, reason="test"))
        while True:
            e = await asyncio.wait_for(sub.get(), 30)
            if isinstance(e, TurnEnded):
                break
        assert e.reason == "interrupted"
        assert STOPPED == ["slow_job"]  # the plugin's generator was closed (its finally ran)


async def test_an_image_used_by_invoke_does_not_also_join_the_next_turn(shared: SharedResources) -> None:
    from mio_agent.events import ImageIn, UserTurn
    from mio_agent.testing import png_bytes

    picture = png_bytes(32, 32, (10, 200, 30))
    async with Session(shared) as session:
        sub = session.bus.subscribe("t", maxsize=10_000)
        session.submit(ImageIn(session=session.id, turn=0, data=picture, name="p.png"))
        await session.drained()
        invoked = await _turn(
            session, sub, InvokeCapability(session=session.id, turn=0, name="describe_image", image=picture)
        )
        assert [e.images for e in invoked if isinstance(e, UserTurn)] == [1]
        after = await _turn(session, sub, TextIn(session=session.id, turn=0, text="and now?"))
        assert [e.images for e in after if isinstance(e, UserTurn)] == [0]
        # an upload that no capability took still joins the next turn, as documented
        session.submit(ImageIn(session=session.id, turn=0, data=picture, name="p.png"))
        await session.drained()
        joined = await _turn(session, sub, TextIn(session=session.id, turn=0, text="what is this?"))
        assert [e.images for e in joined if isinstance(e, UserTurn)] == [1]
