"""docs/plugins.md's examples run as written: its plugin module, and its tests in a project of their own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guides_plugin_and_tests_run_as_written(tmp_path: Path) -> None:
    python = _blocks("python")
    plugin = next(b for b in python if b.startswith("# src/my_plugin/plugin.py"))
    tests = next(b for b in python if "CapabilityHarness" in b and "async def test_" in b)
    toml = next(b for b in _blocks("toml") if "asyncio_mode" in b)
    package = tmp_path / "src" / "my_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(plugin)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_haiku.py").write_text(tests)
    (tmp_path / "pyproject.toml").write_text(toml)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src"), "MIO_AGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout, proc.stdout


def test_every_python_block_of_the_guide_compiles() -> None:
    for block in _blocks("python"):
        # fragments (an indented body) are compiled inside a function, as they are meant to be read
        source = block if not block.startswith(" ") else "async def _():\n" + block
        compile(source, str(GUIDE), "exec")
