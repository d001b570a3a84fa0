"""The hook specifications: documented, typed, named by convention, with the right call flags."""

from __future__ import annotations

import inspect

import pluggy
import pytest

from mio_agent import hookimpl, hookspecs
from mio_agent.markers import PROJECT_NAME

SPECS = [getattr(hookspecs, name) for name in hookspecs.__all__]


def spec_opts(fn: object) -> dict[str, object]:
    opts = getattr(fn, f"{PROJECT_NAME}_spec", None)
    assert opts is not None, f"{fn} is not marked as a hookspec"
    return dict(opts)


def test_required_hooks_exist() -> None:
    required = {
        "mio_agent_configure",
        "mio_agent_capabilities",
        "mio_agent_route",
        "mio_agent_sources",
        "mio_agent_sinks",
        "mio_agent_event",
        "mio_agent_startup",
        "mio_agent_shutdown",
    }
    assert required <= set(hookspecs.__all__)


@pytest.mark.parametrize("fn", SPECS, ids=lambda f: f.__name__)
def test_spec_is_documented_typed_and_sync(fn: object) -> None:
    assert callable(fn)
    name = fn.__name__  # type: ignore[attr-defined]
    assert name.startswith("mio_agent_")
    doc = inspect.getdoc(fn) or ""
    assert len(doc.splitlines()) >= 2, f"{name} needs a docstring with its contract"
    sig = inspect.signature(fn)
    for param in sig.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) has no type"
        assert f":param {param.name}:" in doc, f"{name} does not document {param.name}"
    assert sig.return_annotation is not inspect.Signature.empty
    # pluggy cannot await: an async spec would return a coroutine that is never run
    assert not inspect.iscoroutinefunction(fn)
    spec_opts(fn)


def test_call_flags() -> None:
    assert spec_opts(hookspecs.mio_agent_route)["firstresult"] is True
    assert spec_opts(hookspecs.mio_agent_configure)["historic"] is True
    for fn in SPECS:
        if fn is not hookspecs.mio_agent_route:
            assert not spec_opts(fn)["firstresult"], fn.__name__
    assert "firstresult" in (inspect.getdoc(hookspecs.mio_agent_route) or "")
    assert "Historic" in (inspect.getdoc(hookspecs.mio_agent_configure) or "")


def test_hookimpl_marker_is_the_projects() -> None:
    @hookimpl(tryfirst=True)
    def mio_agent_event(event: object) -> None:
        del event

    opts = getattr(mio_agent_event, f"{PROJECT_NAME}_impl")
    assert opts["tryfirst"] is True
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    assert pm.hook.mio_agent_capabilities() == []
