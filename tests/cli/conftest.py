"""CLI tests share one user cache (embedded model and tiny codecs), built once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def cli_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("mio-cache")
    old = os.environ.get("MIO_AGENT_CACHE")
    os.environ["MIO_AGENT_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("MIO_AGENT_CACHE", None)
    else:
        os.environ["MIO_AGENT_CACHE"] = old


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    exe = shutil.which("mio-agent", path=str(Path(sys.executable).parent)) or "mio-agent"
    return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real spoken sentence from espeak-ng (installed by scripts/setup.sh)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run `make setup` (it installs Debian's espeak-ng)")
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "hello there, how are you today"], check=True)
    return path
