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
        out += _tokenizer(path)
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
            out += _tokenizer(path)
    from mio_agent.codecs.folders import IMAGE_FOLDER, SPEECH_FOLDER, UNCLIP_FOLDER

    codecs = [
        (
            "speech tokenizer",
            cfg.codecs.speech_tokenizer,
            SPEECH_FOLDER,
            ["config.json", "SpeechTokenizer.pt"],
        ),
        ("image tokenizer", cfg.codecs.image_tokenizer, IMAGE_FOLDER, ["seed_quantizer.pt", "eva_vit_g.pth"]),
        ("image decoder", cfg.codecs.diffusion, UNCLIP_FOLDER, ["model_index.json"]),
    ]
    for label, explicit, folder_name, names in codecs:
        folder = Path(explicit).expanduser() if explicit else path / folder_name
        if cfg.model.path is None and explicit is None and not folder.is_dir():
            out.append(Check("ok", label, f"embedded tiny {label}, built on first use in {folder}"))
            continue
        out.append(
            _files(
                label,
                folder,
                names,
                f"copy {folder_name}/ of the MIO release there, or set codecs.* in the config to its folder",
            )
        )
    return out


def _round_trip(tokenizer: Any) -> Check:
    """Rendered prompts of every mode, with text, speech and image blocks, encoded then decoded."""
    from mio_agent.conversation import Conversation, ImagePart, SpeechPart, TextPart, Turn
    from mio_agent.template import render_prompt

    turns = (
        Turn(
            "user", (TextPart("Describe this, please:\n"), ImagePart(tuple(range(32))), SpeechPart((12, 873)))
        ),
        Turn(
            "assistant", (TextPart("A  cat 🐈, 2 ears; 你好."), SpeechPart((1, 2), ((3, 4), (5, 6), (7, 8))))
        ),
        Turn("user", (TextPart("again"),)),
    )
    convs = [
        Conversation("std", turns),
        Conversation("voice", turns),
        Conversation("custom", turns, system="Be brief."),
        Conversation("std"),
    ]
    count = 0
    for conv in convs:
        for gen in (True, False):
            text = render_prompt(conv, generation_prompt=gen)
            back = str(
                tokenizer.decode(tokenizer.encode(text, add_special_tokens=False), skip_special_tokens=False)
            )
            count += 1
            if back != text:
                at = next(
                    (i for i, (a, b) in enumerate(zip(text, back, strict=False)) if a != b),
                    min(len(text), len(back)),
                )
                return Check(
                    "warn",
                    "template round trip",
                    f"a {conv.mode} prompt decodes differently from character {at}: "
                    f"{text[max(0, at - 20) : at + 20]!r} became {back[max(0, at - 20) : at + 20]!r}",
                    "the tokenizer files drop or change text (added tokens with lstrip/rstrip eat the whitespace "
                    "next to them); compare them with those of m-a-p/MIO-7B-Instruct",
                )
    return Check("ok", "template round trip", f"{count} rendered prompts encode and decode to the same text")


def _tokenizer(path: Path) -> list[Check]:
    """Which tokenizer implementation the model folder gets, and whether the templates round-trip."""
    from mio_agent.model.loading import load_tokenizer, tokenizer_implementation

    try:
        tokenizer = load_tokenizer(path)
    except MioAgentError as exc:
        return [Check("fail", "tokenizer", str(exc), "download m-a-p/MIO-7B-Instruct into that folder")]
    return [Check("ok", "tokenizer", tokenizer_implementation(tokenizer)), _round_trip(tokenizer)]


def _optional() -> list[Check]:
    wanted = [
        ("diffusers", "diffusers", "image decoding"),
        ("cv2", "opencv-python-headless", "camera and video keyframes"),
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
