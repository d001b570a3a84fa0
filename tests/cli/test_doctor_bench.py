"""`mio-agent doctor` and the engine benchmark's figures (measured, not asserted as timings)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mio_agent.benchmarks.engine import bench_engine
from mio_agent.cli.main import main
from mio_agent.model.embedded import embedded_model_path
from mio_agent.model.loading import load_model


def test_doctor_on_defaults_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "embedded tiny model" in out and "all required parts present" in out


def test_doctor_names_missing_model_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model:\n  path: {tmp_path / 'MIO-7B-Instruct'}\n", encoding="utf-8")
    assert main(["doctor", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "MIO-7B-Instruct" in out and "m-a-p/MIO-7B-Instruct" in out


def test_bench_engine_reports_every_figure(tmp_path: Path) -> None:
    lm = load_model(
        embedded_model_path(seed=0, cache_dir=tmp_path), device="cpu", dtype="float32", progress=False
    )
    figures = asyncio.run(bench_engine(lm, turns=3, repeats=1, decode_tokens=16, reply_tokens=8))
    for key in ("turn_cost_ratio", "turn_cost_ratio_reprefill", "decode_vs_forward", "decode_vs_generate"):
        assert figures[key] > 0
    assert figures["peak_rss_mb"] > 0
    json.dumps(figures)
