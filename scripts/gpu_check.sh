#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (no network there): GPU tests, then the engine and
# codec benchmarks at MIO-7B's shape, everything teed to $OUT. Before the run, on this machine:
#   pip download -d .gpu-wheels --only-binary=:all: --python-version 3.11 \
#       sentencepiece platformdirs tqdm psutil safetensors pytest pytest-asyncio hypothesis soxr
# and pass `carry: [".gpu-wheels"]` to the device tool. Usage there: bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
log="$OUT/gpu_check.log"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
    if [ -d .gpu-wheels ]; then
        python -m pip install -q --no-index --find-links .gpu-wheels sentencepiece platformdirs tqdm psutil \
            safetensors pytest pytest-asyncio hypothesis soxr 2>&1 | tail -3
    fi
    # the package as installed (runtime/, plugins/, tui/ under mio_agent), without pip or a network
    tree=build/gpu && rm -rf "$tree" && mkdir -p "$tree/mio_agent"
    for entry in mio_agent/*; do ln -s "$PWD/$entry" "$tree/mio_agent/$(basename "$entry")"; done
    for sub in runtime plugins tui; do ln -s "$PWD/$sub" "$tree/mio_agent/$sub"; done
    # the entry points (the runtime's benchmarks, the built-in plugins) as pip would record them
    python - "$tree" <<'PY'
import sys, tomllib
from pathlib import Path
meta = tomllib.loads(Path("pyproject.toml").read_text())["project"]
info = Path(sys.argv[1]) / f"mio_agent-{meta.get('version', '0')}.dist-info"
info.mkdir(parents=True, exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mio-agent\nVersion: {meta.get('version', '0')}\n")
groups = meta.get("entry-points", {})
(info / "entry_points.txt").write_text(
    "".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for g, eps in groups.items())
)
PY
    export PYTHONPATH="$PWD/$tree:$PWD"
} 2>&1 | tee "$log"
export PYTHONPATH="$PWD/build/gpu:$PWD"
bench() { timeout "$1" python -m mio_agent.cli.main "${@:2}"; }
{
    echo "== GPU tests"
    timeout 240 python -m pytest -q -p no:cacheprovider tests/test_engine_cuda.py tests/test_engine_static.py
    echo "== bench engine, mio-7b, CUDA graphs (eager kernels)"
    bench 420 bench engine --shape mio-7b --device cuda --json | tee "$OUT/engine_mio7b.json"
    echo "== bench engine, mio-7b, CUDA graphs + torch.compile"
    bench 600 bench engine --shape mio-7b --device cuda --compile --json | tee "$OUT/engine_mio7b_compile.json"
    echo "== bench codecs on CUDA"
    bench 300 bench codecs --device cuda --json | tee "$OUT/codecs_cuda.json"
} 2>&1 | tee -a "$log"
{
    echo "== bench serve, mio-7b on CUDA: sessions batched vs each alone"
    bench 420 bench serve --shape mio-7b --device cuda --sessions 1,8,32 --json | tee "$OUT/serve_mio7b.json"
    echo "== bench voice, mio-7b on CUDA: end of speech to first audio through the runtime"
    bench 300 bench voice --shape mio-7b --device cuda --quick --json | tee "$OUT/voice_mio7b.json"
} 2>&1 | tee -a "$log"
