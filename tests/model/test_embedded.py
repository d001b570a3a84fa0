"""The embedded model in the cache: built once, atomically, under a lock; loads as a MIO-format model."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest
import torch

import mio_agent.model as model_pkg
from mio_agent.exceptions import ConfigError, ModelFilesError
from mio_agent.model.cache import CACHE_ENV, build_atomically, cache_root
from mio_agent.model.embedded import embedded_model_path
from mio_agent.model.loading import check_model_folder, load_model


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_builds_once_into_the_cache_and_loads(tmp_path: Path) -> None:
    path = embedded_model_path(seed=0, cache_dir=tmp_path)
    assert path.parent == tmp_path / "embedded" and path.name.startswith("embedded-seed0-")
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    # nothing but the folder and its lock is left beside it
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, f".{path.name}.lock"])
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert embedded_model_path(seed=0, cache_dir=tmp_path) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert check_model_folder(path) == []
    lm = load_model(path, device="cpu", progress=False)
    assert lm.is_embedded and lm.stop_ids == (7, 2) and lm.max_positions == 4096
    assert lm.model.config.hidden_size == 64 and lm.model.config.num_hidden_layers == 2
    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([[1, 6, 100]])).logits
    assert out.shape == (1, 3, 12558) and torch.isfinite(out).all()


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path) -> None:
    a = digests(embedded_model_path(seed=3, cache_dir=tmp_path / "a"))
    b = digests(embedded_model_path(seed=3, cache_dir=tmp_path / "b"))
    c = digests(embedded_model_path(seed=4, cache_dir=tmp_path / "a"))
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]
    assert a["config.json"] != c["config.json"]  # the seed is recorded


def test_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv(CACHE_ENV)
    assert cache_root().name == "mio-agent"


def test_bad_preset_or_seed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bench, embedded"):
        embedded_model_path(preset="giant", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="non-negative"):
        embedded_model_path(seed=-1, cache_dir=tmp_path)


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def slow_build(folder: Path) -> None:
        calls.append(1)
        time.sleep(0.2)
        (folder / "done").write_text("x")

    target = tmp_path / "thing"
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(build_atomically(target, slow_build)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]
    assert results == [target] * 3
    assert (target / "done").read_text() == "x"


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "thing"

    def broken(folder: Path) -> None:
        (folder / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_atomically(target, broken)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".thing.lock"]


def test_unwritable_cache_is_a_model_files_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ModelFilesError, match=CACHE_ENV):
        embedded_model_path(cache_dir=blocker)


def test_package_exports() -> None:
    for name in model_pkg.__all__:
        assert getattr(model_pkg, name) is not None
    assert {"load_model", "embedded_model_path", "build_mio_format_model", "LoadedModel"} <= set(
        model_pkg.__all__
    )
