"""The example plugin distribution, installed with pip into a folder and used through its entry point, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mio_agent.testing import CapabilityHarness, RecordingSink, png_bytes

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert list(target.glob("mio_agent_hello-*.dist-info"))
    return target


def cli(installed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    env.pop("MIO_AGENT_DISABLE_PLUGIN_AUTOLOAD", None)
    return subprocess.run(
        [sys.executable, "-m", "mio_agent.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_the_installed_plugin_is_found_through_its_entry_point(installed: Path) -> None:
    p = cli(installed, "plugins", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    origins = {pl["name"]: pl["origin"] for pl in data["plugins"]}
    assert any("mio-agent-hello" in origin for origin in origins.values()), origins
    caps = {c["name"] for c in data["capabilities"]}
    assert "hello" in caps


def test_the_installed_capability_runs_from_the_command_line(installed: Path, tmp_path: Path) -> None:
    p = cli(installed, "invoke", "hello", "--text", "Ada", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "Hello, Ada!" in p.stdout
    assert list(tmp_path.glob("speech-*.wav"))  # and it was said aloud


def test_switching_autoload_off_leaves_it_out(installed: Path) -> None:
    env_off = {**os.environ, "PYTHONPATH": str(installed), "MIO_AGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "mio_agent.cli.main", "plugins", "--json"],
        capture_output=True, text=True, timeout=300, env=env_off,
    )  # fmt: skip
    assert p.returncode == 0 and "hello" not in {c["name"] for c in json.loads(p.stdout)["capabilities"]}


def test_the_examples_own_tests_pass_with_the_testing_helpers(installed: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True, text=True, timeout=300, env=env, cwd=EXAMPLE,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 passed" in p.stdout


async def test_the_harness_runs_built_in_capabilities_with_files() -> None:
    from mio_agent.plugin import PluginManager

    manager = PluginManager(autoload=False)
    manager.load()
    caps = {c.name: c for c in manager.capabilities()}
    harness = CapabilityHarness(max_new_tokens=48)
    sink: RecordingSink = await harness.run(caps["describe_image"], images=[png_bytes()])
    assert not sink.errors and sink.modalities <= set(caps["describe_image"].outputs)
    missing = await harness.run(caps["describe_image"])  # no image: a clear error, not a crash
    assert missing.errors and missing.errors[0].code == "capability.bad_input"
