"""Loading the configuration: defaults, then a YAML file, the environment and overrides, all checked."""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeAlias

import yaml

from mio_agent.config_types import SECTIONS, Config
from mio_agent.exceptions import ConfigError
from mio_agent.fieldcheck import Invalid, convert

__all__ = ["ENV_PREFIX", "load_config"]

ENV_PREFIX = "MIO_AGENT__"
"""Environment variables MIO_AGENT__<SECTION>__<KEY>=<YAML scalar> override single keys."""

# section -> key -> (value, where it came from)
_Layered: TypeAlias = dict[str, dict[str, tuple[object, str]]]


def _describe(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    return f"{text[:60]}…" if len(text) > 60 else text


def _unknown(name: str, choices: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown {what}{hint}; valid {what}s: {', '.join(choices)}"


def _merge(layered: _Layered, data: Mapping[str, object], source: str, errors: list[str]) -> None:
    """Add one layer (file, environment, overrides) of {section: {key: value}} over the others."""
    for section, keys in data.items():
        if section not in SECTIONS:
            errors.append(f"{section}: {_unknown(str(section), list(SECTIONS), 'section')} ({source})")
            continue
        if keys is None:  # `engine:` with nothing under it
            continue
        if not isinstance(keys, Mapping):
            errors.append(f"{section}: expected a mapping of keys, got {_describe(keys)} ({source})")
            continue
        valid = [f.name for f in fields(SECTIONS[section])]
        for key, value in keys.items():
            if key not in valid:
                errors.append(f"{section}.{key}: {_unknown(str(key), valid, 'key')} ({source})")
            else:
                layered.setdefault(section, {})[key] = (value, source)


def _build(layered: _Layered, errors: list[str]) -> Config:
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        given = layered.get(name, {})
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in given:
                continue
            raw, source = given[f.name]
            meta = f.metadata
            value = meta["normalize"](raw) if meta["normalize"] else raw
            try:
                value = convert(value, hints[f.name], numeric_strings=True)
                if value is not None and meta["check"] is not None and not meta["check"](value):
                    raise Invalid(meta["expect"])
            except Invalid:
                errors.append(f"{name}.{f.name}: expected {meta['expect']}, got {_describe(raw)} ({source})")
                continue
            values[f.name] = value
        sections[name] = cls(**values)
    config = Config(**sections)
    engine = config.engine
    # Checked only when each key is valid alone, so one mistake gives one message.
    if not errors and engine.max_new_tokens >= engine.max_context:
        errors.append(
            f"engine.max_new_tokens: must be less than engine.max_context ({engine.max_context}) to leave "
            f"room for the prompt, got {engine.max_new_tokens}"
        )
    if not errors and engine.batch_sessions and engine.backend == "dynamic":
        errors.append(
            "engine.batch_sessions: the batched decode runs on the static cache; set engine.backend to auto "
            f"or static, or engine.batch_sessions to 0 (got backend dynamic, batch_sessions {engine.batch_sessions})"
        )
    return config


def _read_yaml(path: Path) -> Mapping[str, object]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping of sections ({', '.join(SECTIONS)}) at the top, "
            f"got {type(data).__name__}"
        )
    return data


def _env_layer(env: Mapping[str, str], errors: list[str]) -> list[tuple[dict[str, object], str]]:
    layers: list[tuple[dict[str, object], str]] = []
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX):
            continue
        parts = var[len(ENV_PREFIX) :].split("__")
        if len(parts) != 2 or not all(parts):
            errors.append(f"{var}: expected {ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}ENGINE__MODE=std")
            continue
        section, key = (p.lower() for p in parts)
        try:
            value = yaml.safe_load(env[var])
        except yaml.YAMLError as exc:
            errors.append(f"{section}.{key}: not a YAML value: {getattr(exc, 'problem', exc)} (from {var})")
            continue
        layers.append(({section: {key: value}}, f"from {var}"))
    return layers


def _override_layer(overrides: Mapping[str, object], errors: list[str]) -> dict[str, object]:
    nested: dict[str, dict[str, object]] = {}
    for name, value in overrides.items():
        if "." in name:
            section, _, key = name.partition(".")
            nested.setdefault(section, {})[key] = value
        elif isinstance(value, Mapping):
            nested.setdefault(name, {}).update(value)
        else:
            errors.append(f"{name}: name overrides as section.key, e.g. engine.mode (from overrides)")
    return dict(nested)


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Read the configuration: built-in defaults, then `path`, then `env`, then `overrides`.

    `path` is a YAML file of sections (model, codecs, engine, session, plugins, log); keys it
    leaves out keep their defaults; None reads no file. `env` (default: `os.environ`) may hold
    MIO_AGENT__<SECTION>__<KEY>=<value>, the value read as YAML (`null`, `7`, `[a, b]`).
    `overrides` maps "section.key" (or a section to a mapping of keys) to values, e.g. from
    command-line flags.

    Raises ConfigError for an unreadable file or YAML syntax error (naming file, line and
    column), and for every unknown section or key (listing the valid ones) and every invalid
    value (naming the dotted key, what it expects and where the value came from), all at once.
    """
    errors: list[str] = []
    layered: _Layered = {}
    if path is not None:
        p = Path(path)
        _merge(layered, _read_yaml(p), f"in {p}", errors)
    for data, source in _env_layer(os.environ if env is None else env, errors):
        _merge(layered, data, source, errors)
    if overrides:
        _merge(layered, _override_layer(overrides, errors), "from overrides", errors)
    config = _build(layered, errors)
    if errors:
        what = f"config {path}" if path is not None else "config"
        raise ConfigError(f"invalid {what}:\n  " + "\n  ".join(errors))
    return config
