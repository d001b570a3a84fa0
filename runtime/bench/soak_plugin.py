"""The soak's two misbehaving capabilities: one raises, one hangs until `plugins.timeout_s` stops it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from mio_agent import hookimpl
from mio_agent.capability import Capability, CapabilityContext
from mio_agent.events import OutputEvent

__all__ = ["SoakPlugin"]


class _Raises(Capability):
    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        yield ctx.progress(0, 1, "about to fail")
        raise RuntimeError("the soak's capability fails on purpose")


class _Hangs(Capability):
    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        yield ctx.progress(0, 1, "about to hang")
        await asyncio.sleep(3600)  # stopped at plugins.timeout_s


class SoakPlugin:
    """`soak_raises` raises after its first event; `soak_hangs` waits until it is stopped."""

    @hookimpl
    def mio_agent_capabilities(self) -> list[Capability]:
        def cap(cls: type[Capability], name: str) -> Capability:
            return cls(
                name=name, description=f"{name} (bench soak)", inputs=("text",), outputs=("text",),
                mode="std", preset="text", prompt="{text}",
            )  # fmt: skip

        return [cap(_Raises, "soak_raises"), cap(_Hangs, "soak_hangs")]
