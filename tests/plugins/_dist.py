"""Make an installed-looking distribution (module + dist-info with entry points) in a folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


def install_dist(
    root: Path, monkeypatch: pytest.MonkeyPatch, *, dist: str, module: str, source: str, ep_name: str
) -> None:
    """Write `module`.py and `dist`-0.1.dist-info with an entry point `ep_name = module` in group
    mio_agent.plugins, and put `root` on sys.path, as `pip install` would."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[mio_agent.plugins]\n{ep_name} = {module}\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(__import__("sys").modules, module, raising=False)
