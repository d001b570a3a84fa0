"""The plugin manager: built-in plugins, then third-party ones from entry points, validated at start-up."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from mio_agent import hookspecs
from mio_agent.capability import Capability, PluginError, RouteContext, RouteDecision
from mio_agent.markers import PROJECT_NAME, hookimpl, hookspec

if TYPE_CHECKING:
    from mio_agent.config import Config
    from mio_agent.conversation import Turn
    from mio_agent.endpoints import SinkFactory, SourceFactory
    from mio_agent.events import Event

__all__ = [
    "AUTOLOAD_ENV",
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "PluginError",
    "PluginInfo",
    "PluginManager",
    "await_me_maybe",
    "hookimpl",
    "hookspec",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mio_agent.plugins"
AUTOLOAD_ENV = "MIO_AGENT_DISABLE_PLUGIN_AUTOLOAD"
# the built-in plugins, registered first and in this order; the name of each is its last component
DEFAULT_PLUGINS: tuple[str, ...] = (
    "mio_agent.router",
    "mio_agent.plugins.skills",
    "mio_agent.plugins.image_editing",
    "mio_agent.plugins.visual_storytelling",
    "mio_agent.plugins.chain_of_visual_thought",
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One registered plugin: its name and where it came from ("builtin", or "dist NAME VERSION",
    or "registered" for one passed to `register`)."""

    name: str
    origin: str


async def await_me_maybe(value: Awaitable[T] | T) -> T:
    """Await `value` if a hook returned an awaitable, else return it as is."""
    if inspect.isawaitable(value):
        return await value
    return value


def _call(impl: pluggy.HookImpl, **kwargs: object) -> Any:
    """Call one implementation directly with the arguments it asks for (a subset of the spec's)."""
    return impl.function(*(kwargs[name] for name in impl.argnames))


def _autoload_disabled() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class PluginManager:
    """mio-agent's pluggy manager with its hookspecs, loading rules and typed helpers.

    `load()` registers the built-ins (`builtins`), then the entry points of group
    `mio_agent.plugins` unless `autoload` is False (default: on unless the environment variable
    MIO_AGENT_DISABLE_PLUGIN_AUTOLOAD=1), skips every name in `disabled`, and checks that every
    hook implementation matches a specification. Every failure raises PluginError naming the plugin.
    """

    def __init__(
        self,
        *,
        builtins: Sequence[str] = DEFAULT_PLUGINS,
        autoload: bool | None = None,
        disabled: Iterable[str] = (),
    ) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.builtins = tuple(builtins)
        self.autoload = (not _autoload_disabled()) if autoload is None else autoload
        self.disabled = frozenset(disabled)
        for name in self.disabled:
            self.pm.set_blocked(name)
        self._origins: dict[str, str] = {}
        self._capabilities: dict[str, tuple[Capability, str]] | None = None
        self._loaded = False

    @classmethod
    def from_config(cls, config: Config, *, autoload: bool | None = None) -> PluginManager:
        """A loaded manager for `config` (its `plugins.disabled` list), configured with it."""
        manager = cls(autoload=autoload, disabled=config.plugins.disabled)
        manager.load(config)
        return manager

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (`manager.hook.mio_agent_event(event=...)`)."""
        return self.pm.hook

    # -- registration ---------------------------------------------------------------------------
    def register(self, plugin: object, name: str | None = None, *, origin: str = "registered") -> str | None:
        """Register one plugin object or module; returns its name, or None if it is disabled."""
        pname = name or self.pm.get_canonical_name(plugin)
        if self.pm.is_blocked(pname):
            return None
        if self.pm.has_plugin(pname):
            raise PluginError(
                f"plugin {pname!r} ({origin}) clashes with the plugin of the same name from "
                f"{self._origins.get(pname, 'elsewhere')}; rename one or disable it in plugins.disabled"
            )
        try:
            self.pm.register(plugin, pname)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {pname!r} ({origin}) is invalid: {exc}") from None
        self._origins[pname] = origin
        self._capabilities = None
        return pname

    def load(self, config: Config | None = None) -> None:
        """Register built-ins and (unless off) entry-point plugins, validate hooks, then configure."""
        if self._loaded:
            raise PluginError("plugins are already loaded; make a new PluginManager to load again")
        self._loaded = True
        for modname in self.builtins:
            name = modname.rpartition(".")[2]
            if self.pm.is_blocked(name):
                continue
            try:
                module: ModuleType = importlib.import_module(modname)
            except Exception as exc:
                raise PluginError(
                    f"built-in plugin {name!r} ({modname}) failed to import: {type(exc).__name__}: {exc}"
                ) from exc
            self.register(module, name, origin="builtin")
        if self.autoload:
            self._load_entry_points()
        self.check_pending()
        if config is not None:
            self.pm.hook.mio_agent_configure.call_historic(kwargs={"config": config})

    def _load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.is_blocked(ep.name) or self.pm.has_plugin(ep.name):
                continue
            dist = ep.dist
            origin = f"dist {dist.name} {dist.version}" if dist is not None else f"entry point {ep.value}"
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} ({origin}) failed to import {ep.value}: {type(exc).__name__}: {exc}; "
                    f"fix or uninstall it, or add it to plugins.disabled"
                ) from exc
            self.register(plugin, ep.name, origin=origin)

    def check_pending(self) -> None:
        """Fail if a plugin implements a hook that has no specification (a misspelled hook name)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
            raise PluginError(
                f"plugin {name!r} ({self._origins.get(name, 'registered')}): {exc}; "
                f"hook names are listed in mio_agent.hookspecs"
            ) from None

    def plugins(self) -> list[PluginInfo]:
        """Every registered plugin in registration order."""
        return [
            PluginInfo(name, origin) for name, origin in self._origins.items() if self.pm.has_plugin(name)
        ]

    # -- typed hook calls -----------------------------------------------------------------------
    def _collect(self) -> dict[str, tuple[Capability, str]]:
        found: dict[str, tuple[Capability, str]] = {}
        # get_hookimpls() is in registration order (pluggy calls them in reverse)
        for impl in self.pm.hook.mio_agent_capabilities.get_hookimpls():
            pname = impl.plugin_name
            try:
                caps = _call(impl)
            except Exception as exc:
                raise PluginError(
                    f"plugin {pname!r} failed in mio_agent_capabilities: {type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(caps, list | tuple):
                raise PluginError(
                    f"plugin {pname!r}: mio_agent_capabilities must return a list of Capability"
                )
            for cap in caps:
                if not isinstance(cap, Capability):
                    raise PluginError(
                        f"plugin {pname!r}: mio_agent_capabilities returned a {type(cap).__name__}, "
                        "not a mio_agent.capability.Capability"
                    )
                if cap.name in found:
                    raise PluginError(
                        f"capability {cap.name!r} is declared by both plugin {found[cap.name][1]!r} and "
                        f"plugin {pname!r}; disable one in plugins.disabled"
                    )
                found[cap.name] = (cap, pname)
        return found

    def capabilities(self) -> tuple[Capability, ...]:
        """Every capability of every plugin, built-ins first (registration order)."""
        if self._capabilities is None:
            self._capabilities = self._collect()
        return tuple(cap for cap, _ in self._capabilities.values())

    def capability(self, name: str) -> Capability:
        """The capability called `name`; PluginError lists the known names when there is none."""
        self.capabilities()
        assert self._capabilities is not None
        if name not in self._capabilities:
            known = ", ".join(sorted(self._capabilities)) or "none"
            raise PluginError(f"no capability {name!r}; known capabilities: {known}")
        return self._capabilities[name][0]

    def capability_plugin(self, name: str) -> str:
        """The name of the plugin that declared capability `name`."""
        self.capability(name)
        assert self._capabilities is not None
        return self._capabilities[name][1]

    def route(self, turn: Turn, context: RouteContext | None = None) -> RouteDecision | None:
        """Ask the routers (firstresult) which capability, if any, takes `turn`."""
        caps = self.capabilities()
        decision = self.pm.hook.mio_agent_route(
            turn=turn, capabilities=caps, context=context or RouteContext()
        )
        if decision is None:
            return None
        if not isinstance(decision, RouteDecision):
            raise PluginError(
                f"a mio_agent_route implementation returned a {type(decision).__name__}, not a RouteDecision or None"
            )
        self.capability(decision.capability)
        return decision

    def sources(self, config: Config) -> list[SourceFactory]:
        """Every source factory contributed by every plugin."""
        return [f for group in self.pm.hook.mio_agent_sources(config=config) for f in group]

    def sinks(self, config: Config) -> list[SinkFactory]:
        """Every sink factory contributed by every plugin."""
        return [f for group in self.pm.hook.mio_agent_sinks(config=config) for f in group]

    def emit(self, event: Event) -> None:
        """Show `event` to every observer; one observer's exception is logged and the rest still run.

        Implementations are called one by one (not through pluggy's hook call), so wrappers of
        this hook are not run."""
        for impl in reversed(self.pm.hook.mio_agent_event.get_hookimpls()):
            try:
                _call(impl, event=event)
            except Exception:
                log.exception("plugin %r failed in mio_agent_event", impl.plugin_name)

    async def startup(self, app: object) -> None:
        """Run every start-up hook and await what they return."""
        for result in self.pm.hook.mio_agent_startup(app=app):
            await await_me_maybe(result)

    async def shutdown(self, app: object) -> None:
        """Run every shut-down hook; one that fails is logged and the others still run."""
        for impl in reversed(self.pm.hook.mio_agent_shutdown.get_hookimpls()):
            try:
                await await_me_maybe(_call(impl, app=app))
            except Exception:
                log.exception("plugin %r failed in mio_agent_shutdown", impl.plugin_name)
