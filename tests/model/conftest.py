"""Tiny MIO-format folders shared by the model tests (built once per session, copied before editing)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.model.helpers import build_tiny

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Same seed, three layouts: MIO's sharded .bin, single safetensors, sharded safetensors."""
    root = tmp_path_factory.mktemp("models")
    return {
        "bin3": build_tiny(root / "bin3", weights="bin", num_shards=3),
        "st1": build_tiny(root / "st1"),
        "st2": build_tiny(root / "st2", num_shards=2),
    }


@pytest.fixture
def copy_of(tmp_path: Path, folders: dict[str, Path]) -> Callable[[str], Path]:
    """A private copy of a session folder, free to damage."""

    def make(name: str) -> Path:
        return Path(shutil.copytree(folders[name], tmp_path / name))

    return make
