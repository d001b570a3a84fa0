"""Host memory while loading a large sharded .bin checkpoint stays near one shard plus the model.

A float32 checkpoint of about 1 B parameters in MIO's layout (six `pytorch_model-0000x-of-00006.bin`
shards) is loaded into bfloat16 on the CPU in a fresh interpreter, so the peak RSS measured there is
that of the loading alone.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mio_agent.model.builder import build_mio_format_model
from mio_agent.model.loading import load_model
from tests.model.helpers import build_tiny

NUM_SHARDS = 6
# about 0.96 B parameters: 3.85 GB of float32 shards, 1.92 GB as a bfloat16 model
SIZES: dict[str, Any] = {
    "hidden_size": 2048,
    "num_layers": 18,
    "num_heads": 16,
    "num_kv_heads": 16,
    "intermediate_size": 5504,
    "max_position_embeddings": 2048,
}
# interpreter and allocator overhead allowed beyond the model and one shard
MARGIN = 300 * 2**20
SAMPLED = ("model.embed_tokens.weight", "model.layers.9.mlp.down_proj.weight")
MB = 2**20

# runs in a fresh interpreter: argv[1] is the model folder; prints one JSON line on stdout
_CHILD = textwrap.dedent(
    """
    import json, resource, sys

    import torch
    import transformers  # noqa: F401
    from mio_agent.model.loading import load_model

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux


    def peak_rss():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


    folder = sys.argv[1]
    baseline = peak_rss()
    loaded = load_model(folder, device="cpu", dtype="bfloat16", progress=True)
    peak = peak_rss()
    model = loaded.model
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    dtypes = sorted({str(t.dtype) for t in model.state_dict().values()})
    with open(f"{folder}/pytorch_model.bin.index.json", encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
    state = model.state_dict()
    equal = {}
    for key in sys.argv[2:]:
        shard = torch.load(f"{folder}/{weight_map[key]}", map_location="cpu", weights_only=True, mmap=True)
        equal[key] = bool(torch.equal(state[key], shard[key].to(torch.bfloat16)))
        del shard
    print(json.dumps({
        "baseline": baseline, "peak": peak, "model_bytes": model_bytes, "dtypes": dtypes, "equal": equal,
    }))
    """
)


@pytest.fixture(scope="module")
def big_bin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """MIO's six-shard float32 .bin layout at about 1 B parameters (about 20 s to write).

    Removed afterwards: pytest keeps its last few temporary folders, 3.8 GB each with these.
    """
    folder = tmp_path_factory.mktemp("big") / "mio-1b"
    yield build_mio_format_model(folder, **SIZES, seed=0, weights="bin", num_shards=NUM_SHARDS)
    shutil.rmtree(folder, ignore_errors=True)


def test_bf16_cpu_load_holds_the_model_plus_one_shard(big_bin: Path) -> None:
    shards = sorted(big_bin.glob("pytorch_model-*.bin"))
    assert len(shards) == NUM_SHARDS
    largest = max(s.stat().st_size for s in shards)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(big_bin), *SAMPLED],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"loading failed:\n{done.stderr[-4000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])

    grown = result["peak"] - result["baseline"]
    allowed = result["model_bytes"] + largest + MARGIN
    numbers = (
        f"peak {result['peak'] / MB:.0f} MB, baseline {result['baseline'] / MB:.0f} MB, "
        f"grown {grown / MB:.0f} MB; allowed {allowed / MB:.0f} MB = model {result['model_bytes'] / MB:.0f} MB "
        f"(bf16) + largest shard {largest / MB:.0f} MB + margin {MARGIN / MB:.0f} MB"
    )
    assert grown <= allowed, f"loading held more than the model plus one shard: {numbers}"

    # the model is bfloat16 through and through: about half the float32 shards
    assert result["dtypes"] == ["torch.bfloat16"], numbers
    assert result["model_bytes"] < sum(s.stat().st_size for s in shards) / 2 + MARGIN, numbers

    # one bar update per shard: 0/6 at the start, then 1/6 .. 6/6
    shown = {int(n) for n in re.findall(rf"(\d+)/{NUM_SHARDS}\b", done.stderr)}
    assert shown == set(range(NUM_SHARDS + 1)), f"progress showed {sorted(shown)}:\n{done.stderr[-2000:]}"
    assert f"loading {big_bin.name}" in done.stderr

    assert result["equal"] == dict.fromkeys(SAMPLED, True)


def test_legacy_pickle_shards_load_without_mmap(tmp_path: Path) -> None:
    # shards in torch's pre-zip format cannot be memory-mapped; they are read whole, and still load
    folder = build_tiny(tmp_path / "legacy", weights="bin", num_shards=3)
    expected: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("pytorch_model-*.bin")):
        tensors = torch.load(shard, map_location="cpu", weights_only=True)
        torch.save(tensors, shard, _use_new_zipfile_serialization=False)
        assert shard.read_bytes()[:4] != b"PK\x03\x04"
        expected.update(tensors)
    loaded = load_model(folder, device="cpu", dtype="bfloat16", progress=False)
    state = loaded.model.state_dict()
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor.to(torch.bfloat16)), key
