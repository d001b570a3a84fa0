"""Hook specifications of mio-agent: every extension point a plugin can implement."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

from mio_agent.markers import hookspec

if TYPE_CHECKING:
    from mio_agent.capability import Capability, RouteContext, RouteDecision
    from mio_agent.config import Config
    from mio_agent.conversation import Turn
    from mio_agent.endpoints import SinkFactory, SourceFactory
    from mio_agent.events import Event

__all__ = [
    "mio_agent_capabilities",
    "mio_agent_configure",
    "mio_agent_event",
    "mio_agent_route",
    "mio_agent_shutdown",
    "mio_agent_sinks",
    "mio_agent_sources",
    "mio_agent_startup",
]

# pluggy is synchronous: every hook here is a plain function. Work that must wait returns an
# object with async methods (capabilities, source and sink factories) or an awaitable the host
# awaits (start-up and shut-down). A firstresult hook must never be `async def`: its coroutine
# is not None, so it would always win.


# -------------------------------------------------------------------------
# Configuration
# -------------------------------------------------------------------------


@hookspec(historic=True)
def mio_agent_configure(config: Config) -> None:
    """Take the loaded configuration, once, before anything runs.

    :param config: The whole configuration (`mio_agent.config.Config`), frozen.

    Called after every plugin is registered. Historic: a plugin registered later is called at
    its registration with the same config, so late plugins see it too. Raise
    `mio_agent.ConfigError` for a bad setting of your own; it stops start-up with your message.
    """


# -------------------------------------------------------------------------
# Capabilities and routing
# -------------------------------------------------------------------------


@hookspec
def mio_agent_capabilities() -> list[Capability]:
    """Return the capabilities this plugin contributes.

    :return: A list of `mio_agent.capability.Capability` (possibly empty). Names must be unique
        across all plugins; a clash stops start-up with a PluginError naming both plugins.

    Called once per plugin manager and cached; every plugin's list is collected.
    """
    return []


@hookspec(firstresult=True)
def mio_agent_route(
    turn: Turn, capabilities: Sequence[Capability], context: RouteContext
) -> RouteDecision | None:
    """Decide whether a user turn invokes a capability.

    :param turn: The user's turn (text, speech codes, images) as it will be sent to MIO.
    :param capabilities: Every registered capability, in registration order.
    :param context: What else is known: the transcript of the user's speech (if one was made), the
        session's mode, whether an image is at hand.
    :return: A `RouteDecision` naming the capability (and the reason, which is logged as an
        event), or None to let the next implementation decide. When every implementation returns
        None the turn is plain conversation.

    Stops at the first non-None result (firstresult). Plugins registered later are tried first,
    so a third-party router runs before the built-in one; use `tryfirst`/`trylast` to order
    explicitly. Must be a plain function: never `async def`.
    """
    return None


# -------------------------------------------------------------------------
# Inputs and outputs
# -------------------------------------------------------------------------


@hookspec
def mio_agent_sources(config: Config) -> list[SourceFactory]:
    """Return the input sources this plugin contributes (microphones, cameras, feeds).

    :param config: The whole configuration.
    :return: A list of objects following `mio_agent.endpoints.SourceFactory`: a `name` and an
        async `open()` that returns the running source. Nothing may be opened here: the host
        opens sources when the app starts and closes them at shut-down.
    """
    return []


@hookspec
def mio_agent_sinks(config: Config) -> list[SinkFactory]:
    """Return the output sinks this plugin contributes (speakers, displays, files, clients).

    :param config: The whole configuration.
    :return: A list of objects following `mio_agent.endpoints.SinkFactory`: a `name` and an async
        `open()` that returns the running sink, which receives every output event.
    """
    return []


# -------------------------------------------------------------------------
# Observation
# -------------------------------------------------------------------------


@hookspec
def mio_agent_event(event: Event) -> None:
    """Observe every event that passes through the session (inputs, outputs, controls).

    :param event: The event; events are frozen, so an observer cannot change them.

    Must return quickly and must not block: it runs on the event loop for every audio chunk.
    Start a task for slow work. An exception is logged and the event goes on to the others.
    """


# -------------------------------------------------------------------------
# Life cycle
# -------------------------------------------------------------------------


@hookspec
def mio_agent_startup(app: object) -> Awaitable[None] | None:
    """Called once when the app has started, before the first turn.

    :param app: The running application (the runtime's App object).
    :return: None, or an awaitable (e.g. a coroutine from an `async def` helper) that the host
        awaits before the first turn.
    """
    return None


@hookspec
def mio_agent_shutdown(app: object) -> Awaitable[None] | None:
    """Called once when the app stops, after the last turn.

    :param app: The running application.
    :return: None, or an awaitable the host awaits (with a time limit) before it exits.
    """
    return None
