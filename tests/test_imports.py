"""The package's import graph has no circles (TYPE_CHECKING imports included), and layers import downward."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name of each top-level folder (runtime/, plugins/, tui/ install under mio_agent)
PACKAGES = {
    "mio_agent": "mio_agent",
    "mio_agent.runtime": "runtime",
    "mio_agent.plugins": "plugins",
    "mio_agent.tui": "tui",
}
SUBPACKAGES = {"runtime", "plugins", "tui"}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for file in (ROOT / folder).rglob("*.py"):
            parts = list(file.relative_to(ROOT / folder).with_suffix("").parts)
            if package == "mio_agent" and parts and parts[0] in SUBPACKAGES:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([package, *parts])] = file
    return mods


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, file in mods.items():
        for node in ast.walk(ast.parse(file.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            graph[name] |= {t for t in targets if t in mods and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_never_imports_the_runtime_tui_or_plugins() -> None:
    graph = _graph()
    upward = [
        (m, t)
        for m, targets in graph.items()
        if not m.startswith(("mio_agent.runtime", "mio_agent.tui", "mio_agent.plugins"))
        for t in targets
        if t.startswith(("mio_agent.runtime", "mio_agent.tui"))
    ]
    assert upward == []


def test_the_runtime_never_imports_the_tui() -> None:
    graph = _graph()
    assert [
        (m, t)
        for m, ts in graph.items()
        if m.startswith("mio_agent.runtime")
        for t in ts
        if t.startswith("mio_agent.tui")
    ] == []


def test_voice_and_audio_never_import_the_network_front_ends() -> None:
    graph = _graph()
    lower = ("mio_agent.runtime.voice", "mio_agent.runtime.audio")
    upward = [
        (m, t)
        for m, ts in graph.items()
        if m.startswith(lower)
        for t in ts
        if t.startswith("mio_agent.runtime.net")
    ]
    assert upward == []


def test_audio_never_imports_the_voice_path() -> None:
    graph = _graph()
    audio = "mio_agent.runtime.audio"
    assert [
        (m, t)
        for m, ts in graph.items()
        if m.startswith(audio)
        for t in ts
        if t.startswith("mio_agent.runtime.voice")
    ] == []
