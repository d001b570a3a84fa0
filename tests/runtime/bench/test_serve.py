"""A smoke run of `bench serve` (embedded model on the CPU, two voice clients on a real server, batched
then alone) and the command as a user runs it. No wall-clock assertions: only what holds whatever the timing."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from mio_agent.exceptions import ConfigError
from mio_agent.runtime.bench.serve import bench_serve, parse_sessions

PER_MODE = (
    "load_s", "replies", "replies_completed", "tokens", "tok_s", "voice_rtf_p5", "voice_rtf_worst",
    "first_audio_p50_ms", "first_audio_p99_ms", "sessions_with_audio", "refused", "errors", "gpu_peak_mb",
)  # fmt: skip
BATCHED_ONLY = ("steps", "rows_decoded", "rows_per_step")


def check_figures(f: dict[str, Any], n: int) -> None:
    for mode in ("batched", "alone"):
        for key in PER_MODE:
            assert f"n{n}_{mode}_{key}" in f, f"n{n}_{mode}_{key}"
        assert f[f"n{n}_{mode}_refused"] == 0
        assert f[f"n{n}_{mode}_errors"] == 0, f.get(f"n{n}_{mode}_error_samples")
        assert f[f"n{n}_{mode}_replies"] == n
        assert f[f"n{n}_{mode}_replies_completed"] == n
        # every session heard its reply: audio arrived, so its first-audio and rtf figures exist
        assert f[f"n{n}_{mode}_sessions_with_audio"] == n
        assert f[f"n{n}_{mode}_tokens"] > 0
        assert f[f"n{n}_{mode}_tok_s"] > 0
        assert f[f"n{n}_{mode}_voice_rtf_worst"] > 0
        assert f[f"n{n}_{mode}_first_audio_p50_ms"] > 0
        assert f[f"n{n}_{mode}_gpu_peak_mb"] is None  # on the CPU
    for key in BATCHED_ONLY:
        assert f"n{n}_batched_{key}" in f
        assert f"n{n}_alone_{key}" not in f
    # the batched run decoded through the scheduler's rows, and every reply did the same work
    assert f[f"n{n}_batched_rows_decoded"] > 0
    assert f[f"n{n}_batched_steps"] > 0
    # each reply's first token comes from its prompt's prefill, every later one from a decoded row
    assert f[f"n{n}_batched_rows_decoded"] >= f[f"n{n}_batched_tokens"] - n
    assert f[f"n{n}_batched_tokens"] == f[f"n{n}_alone_tokens"]
    assert f[f"n{n}_tok_s_ratio"] > 0


@pytest.mark.timeout(300)
async def test_a_quick_serve_bench_measures_both_modes() -> None:
    f = await bench_serve(shape="embedded", device="cpu", sessions=(2,), turns=1, quick=True)
    assert f["bench"] == "serve" and f["sessions"] == [2] and f["turns"] == 1
    check_figures(f, 2)


def test_sessions_parse_as_a_count_or_a_list() -> None:
    assert parse_sessions("8") == (8,)
    assert parse_sessions("1,8,32,64") == (1, 8, 32, 64)
    assert parse_sessions(4) == (4,)
    for bad in ("", "0", "1,,2", "a", "-1"):
        with pytest.raises(ConfigError):
            parse_sessions(bad)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mio_agent.cli.main", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.timeout(300)
def test_the_command_prints_the_figures_as_one_json_line() -> None:
    proc = cli("serve", "--quick", "--shape", "embedded", "--sessions", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    f = json.loads(proc.stdout.strip().splitlines()[-1])
    assert f["sessions"] == [2] and f["model"] == "embedded"
    check_figures(f, 2)


def test_soak_refuses_a_list_of_sessions_and_bad_counts_are_usage_errors() -> None:
    proc = cli("soak", "--sessions", "1,8")
    assert proc.returncode == 2
    assert "--sessions takes one count" in proc.stderr
    proc = cli("serve", "--sessions", "1,x")
    assert proc.returncode == 2
    assert "--sessions" in proc.stderr
