"""What several commands share: config loading and opening the configured model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mio_agent.config import Config, load_config
from mio_agent.exceptions import ConfigError

__all__ = [
    "add_config_argument",
    "config_from_args",
    "model_dir",
    "next_output",
    "open_model",
    "output_file",
    "output_folder",
]

EMBEDDED_NOTE = (
    "note: running the embedded tiny model (random weights, built from a seed): its replies are noise. "
    "Set model.path in a config to a MIO-7B-Instruct folder for real replies."
)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config (default: built-in defaults = configs/default.yaml, the embedded model)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def model_dir(cfg: Config) -> tuple[Path, bool]:
    """The configured model folder (the embedded one built on first use); (path, embedded)."""
    from mio_agent.model.embedded import configured_model_dir

    return configured_model_dir(cfg.model)


def open_model(cfg: Config, *, quiet: bool = False):  # type: ignore[no-untyped-def]
    """Load the configured model (embedded by default), saying once when replies will be noise."""
    from mio_agent.model.loading import load_model

    path, embedded = model_dir(cfg)
    if embedded and not quiet:
        print(EMBEDDED_NOTE, file=sys.stderr)
    from mio_agent.model.fast_path import prepare_for_config

    lm = load_model(path, device=cfg.model.device, dtype=cfg.model.dtype, progress=not quiet and not embedded)
    # compile and capture the GPU decode step at load, never on a user's first turn
    prepare_for_config(lm, cfg.engine)
    return lm


# -- where commands write: one contract (README, "Command line") -----------------------------------


def output_folder(path: str | Path, option: str) -> Path:
    """A folder option (`--out`, `--out-dir`, `--session-dir`): created with its parents if missing."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder}: is a file, not a folder; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{option} {folder}: cannot create the folder ({exc.strerror}); give a writable one"
        ) from None
    return folder


def output_file(path: str | Path, option: str) -> Path:
    """A file option (`-o`, `--speaker-file`): its folder must exist (nothing is created at random places)."""
    file = Path(path).expanduser()
    if not file.parent.is_dir():
        raise ConfigError(
            f"{option} {file}: the folder {file.parent} does not exist; create it or pick another"
        )
    if file.is_dir():
        raise ConfigError(f"{option} {file}: is a folder; give a file name")
    return file


def next_output(folder: Path, stem: str, suffix: str) -> tuple[Path, int]:
    """The first `stem-N.suffix` after the highest N already in `folder`: nothing earlier is overwritten."""
    highest = 0
    for existing in folder.glob(f"{stem}-*{suffix}"):
        number = existing.name[len(stem) + 1 : -len(suffix)]
        if number.isdigit():
            highest = max(highest, int(number))
    return folder / f"{stem}-{highest + 1}{suffix}", highest + 1
