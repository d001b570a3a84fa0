"""`mio-agent doctor`: what is installed, which devices exist, which model files are present."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mio_agent.cli.common import add_config_argument
from mio_agent.exceptions import MioAgentError

__all__ = ["Check", "collect_checks", "register", "run"]

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, its state, and what to do about it."""

    status: Status
    what: str
    detail: str
    fix: str = ""


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "doctor", help="check Python, torch, devices and model files", description="Check the installation."
    )
    add_config_argument(p)
    p.set_defaults(func=run)


def _python() -> Check:
    v = sys.version_info
    if v >= (3, 11):
        return Check("ok", "python", platform.python_version())
    return Check("fail", "python", platform.python_version(), "install Python 3.11")


def _torch() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("fail", "torch", "not installed", "run `make setup` (installs torch==2.13.0)")]
    out = [Check("ok", "torch", torch.__version__)]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            out.append(Check("ok", f"gpu cuda:{i}", f"{props.name}, {props.total_memory / 2**30:.0f} GiB"))
    else:
        out.append(
            Check(
                "warn",
                "gpu",
                "none (CUDA not available): models run on the CPU",
                "for MIO-7B at speaking speed use a CUDA GPU with >= 16 GiB and a CUDA build of torch",
            )
        )
    return out


def _files(label: str, folder: Path, names: list[str], fix: str) -> Check:
    missing = [n for n in names if not (folder / n).exists()]
    if not folder.is_dir():
        return Check("fail", label, f"{folder}: no such folder", fix)
    if missing:
        return Check("fail", label, f"{folder}: missing {', '.join(missing)}", fix)
    return Check("ok", label, str(folder))


def _model(config: str | None) -> list[Check]:
    from mio_agent.config import load_config

    try:
        cfg = load_config(config)
    except MioAgentError as exc:
        return [Check("fail", "config", str(exc), "fix the named key")]
    out = [Check("ok", "config", config or "built-in defaults (configs/default.yaml)")]
    if cfg.model.path is None:
        from mio_agent.model.embedded import embedded_model_path

        try:
            path = embedded_model_path(seed=cfg.model.embedded_seed)
        except MioAgentError as exc:
            return [*out, Check("fail", "embedded model", str(exc), "check the cache folder is writable")]
        out.append(
            Check(
                "warn",
                "model",
                f"embedded tiny model at {path} (replies are noise)",
                "set model.path to a MIO-7B-Instruct folder (Hugging Face m-a-p/MIO-7B-Instruct) for real replies",
            )
        )
    else:
        from mio_agent.model.loading import check_model_folder

        path = Path(cfg.model.path).expanduser()
        problems = check_model_folder(path)
        if problems:
            out += [
                Check("fail", "model", p, "download m-a-p/MIO-7B-Instruct into that folder") for p in problems
            ]
        else:
            out.append(Check("ok", "model", str(path)))
    speech = (
        Path(cfg.codecs.speech_tokenizer).expanduser()
        if cfg.codecs.speech_tokenizer
        else path / "SpeechTokenizer"
    )
    image = (
        Path(cfg.codecs.image_tokenizer).expanduser()
        if cfg.codecs.image_tokenizer
        else path / "seed-tokenizer-2"
    )
    diffusion = (
        Path(cfg.codecs.diffusion).expanduser()
        if cfg.codecs.diffusion
        else path / "stable-diffusion-2-1-unclip"
    )
    out.append(
        _files(
            "speech tokenizer",
            speech,
            ["config.json", "SpeechTokenizer.pt"],
            "copy SpeechTokenizer/ (speechtokenizer_hubert_avg) of the MIO release there or set codecs.speech_tokenizer",
        )
    )
    out.append(
        _files(
            "image tokenizer",
            image,
            ["seed_quantizer.pt", "eva_vit_g.pth"],
            "copy seed-tokenizer-2/ of the MIO release there or set codecs.image_tokenizer",
        )
    )
    out.append(
        _files(
            "image decoder",
            diffusion,
            ["model_index.json"],
            "copy stable-diffusion-2-1-unclip/ (diffusers format) there or set codecs.diffusion",
        )
    )
    return out


def _optional() -> list[Check]:
    wanted = [
        ("diffusers", "diffusers", "image decoding"),
        ("cv2", "opencv-python-headless", "camera and video keyframes"),
        ("soxr", "soxr", "audio resampling"),
    ]
    out = []
    for module, package, why in wanted:
        if importlib.util.find_spec(module) is not None:
            out.append(Check("ok", package, f"installed ({why})"))
        else:
            out.append(Check("warn", package, f"not installed: no {why}", f"pip install {package}"))
    return out


def collect_checks(config: str | None) -> list[Check]:
    """Every check, in report order."""
    return [_python(), *_torch(), *_model(config), *_optional()]


def run(args: argparse.Namespace) -> int:
    checks = collect_checks(args.config)
    marks = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
    for c in checks:
        print(f"{marks[c.status]}  {c.what}: {c.detail}")
        if c.fix and c.status != "ok":
            print(f"      -> {c.fix}")
    failed = sum(c.status == "fail" for c in checks)
    print(f"{failed} problem(s) found" if failed else "all required parts present")
    return 1 if failed else 0
