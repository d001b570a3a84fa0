"""Packaging: every package is installed, every public module has a complete `__all__`."""

from __future__ import annotations

import importlib
import pkgutil
import tomllib
from pathlib import Path

import pytest

import mio_agent

ROOT = Path(__file__).resolve().parents[1]
# folders installed under mio_agent by the package-dir mapping
MAPPED = {"runtime": "mio_agent.runtime", "plugins": "mio_agent.plugins", "tui": "mio_agent.tui"}


def _source_packages() -> set[str]:
    found = set()
    for init in ROOT.glob("mio_agent/**/__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    for folder, name in MAPPED.items():
        for init in (ROOT / folder).glob("**/__init__.py"):
            found.add(".".join([name, *init.parent.relative_to(ROOT / folder).parts]))
    return found


def test_pyproject_lists_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    assert listed == _source_packages()
    assert config["tool"]["setuptools"]["package-dir"] == {
        "mio_agent": "mio_agent",
        **{v: k for k, v in MAPPED.items()},
    }


def _modules() -> list[str]:
    names = ["mio_agent"]
    for info in pkgutil.walk_packages(mio_agent.__path__, "mio_agent."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_module_has_complete_all(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__ and module.__doc__.strip(), f"{name} has no module docstring"
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes {missing}"


def test_mapped_folders_import_as_subpackages() -> None:
    for name in MAPPED.values():
        module = importlib.import_module(name)
        assert module.__file__ is not None and "mio_agent" not in Path(module.__file__).parent.name
