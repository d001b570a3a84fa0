"""Running a capability under supervision: a plugin that raises, hangs or yields garbage becomes an error event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from mio_agent.capability import Capability, CapabilityContext
from mio_agent.events import ErrorEvent, OutputEvent
from mio_agent.exceptions import ConversationError

__all__ = ["CLOSE_TIMEOUT_S", "DEFAULT_TIMEOUT_S", "run_capability"]

log = logging.getLogger(__name__)

# a whole capability run (image generation on a real model takes tens of seconds)
DEFAULT_TIMEOUT_S = 600.0
# how long a plugin may take to clean up after it was stopped
CLOSE_TIMEOUT_S = 5.0


async def run_capability(
    cap: Capability, ctx: CapabilityContext, *, timeout_s: float | None = DEFAULT_TIMEOUT_S
) -> AsyncGenerator[OutputEvent, None]:
    """Yield `cap`'s events; a failure ends the run with one ErrorEvent instead of an exception.

    timeout_s: seconds the whole run may take (None: no limit). A plugin that raises, passes the
    limit or yields something that is not an OutputEvent is stopped (its generator closed, which
    cancels its reply) and reported as `ErrorEvent(code="capability.error" | "capability.timeout" |
    "capability.garbage")`; input the capability cannot take (ConversationError, e.g. no image)
    gives "capability.bad_input", so the session and the other plugins go on. Closing this generator, or
    cancelling the task that iterates it, stops the capability the same way; CancelledError then
    propagates as usual.
    """
    if not ctx.capability:
        ctx.capability = cap.name
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    agen = cap.run(ctx).__aiter__()
    failure: ErrorEvent | None = None
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    ev = await anext(agen)
            except StopAsyncIteration:
                break
            except TimeoutError:
                failure = ctx.error(
                    "capability.timeout", f"capability {cap.name!r} ran past its limit of {timeout_s:g} s"
                )
                break
            except ConversationError as exc:
                # the user's input does not fit the capability: say so, no traceback needed
                failure = ctx.error("capability.bad_input", str(exc))
                break
            except Exception as exc:
                log.warning("capability %r failed", cap.name, exc_info=True)
                failure = ctx.error(
                    "capability.error", f"capability {cap.name!r} failed: {type(exc).__name__}: {exc}"
                )
                break
            if not isinstance(ev, OutputEvent):
                failure = ctx.error(
                    "capability.garbage",
                    f"capability {cap.name!r} yielded a {type(ev).__name__}, not an output event; it was stopped",
                )
                break
            yield ev
    finally:
        await _close(cap, agen)
        await ctx.aclose()
    if failure is not None:
        yield failure


async def _close(cap: Capability, agen: AsyncIterator[OutputEvent]) -> None:
    aclose = getattr(agen, "aclose", None)
    if aclose is None:
        return
    # a plugin that fails while cleaning up must not take the session with it
    with contextlib.suppress(Exception):
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await aclose()
        except TimeoutError:
            log.warning("capability %r did not stop within %g s of being closed", cap.name, CLOSE_TIMEOUT_S)
