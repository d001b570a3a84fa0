"""Fixtures for the TUI tests: the embedded model's resources, Pilot helpers, a spoken WAV (espeak-ng)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mio_agent.config import load_config
from mio_agent.runtime.voice.resources import SharedResources


@pytest.fixture(scope="session")
def shared() -> SharedResources:
    """The embedded tiny model (random weights: replies are noise), loaded once for all TUI tests."""
    return SharedResources.load(
        load_config(
            None, overrides={"engine.max_new_tokens": 900, "router.transcribe": "never", "engine.seed": 1}
        )
    )


async def wait_until(pilot: Any, cond: Callable[[], bool], timeout: float = 60) -> None:
    """Let the app run until `cond()` holds (or fail after `timeout` seconds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the UI did not get there in time")
        await pilot.pause(0.05)


def shown(widgets: Any) -> list[str]:
    """The text the given widgets show."""
    return [str(w.render()) for w in widgets]


@pytest.fixture(scope="session")
def spoken_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 1.5 s of speech as a WAV file (espeak-ng), for a file-backed microphone."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        # a required test tool (scripts/setup.sh installs it): missing, the suite fails rather than skips
        pytest.fail(
            "espeak-ng is not installed; the spoken-WAV fixture needs it: apt-get install espeak-ng "
            "(scripts/setup.sh installs it)"
        )
    out = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(
        [exe, "-w", str(out), "Hello there, how are you?"], check=True, capture_output=True, timeout=60
    )
    return out
