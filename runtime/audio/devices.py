"""Finding sound devices through PyAudio (PortAudio): listing them, choosing one by name or index."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from mio_agent.runtime.audio.base import DeviceError

__all__ = [
    "DeviceInfo",
    "DeviceKind",
    "choose_device",
    "devices_of",
    "find_device",
    "format_devices",
    "list_devices",
    "open_pyaudio",
]

DeviceKind = Literal["input", "output"]

_FILE_INSTEAD = {
    "input": "read a WAV file instead with --mic-file IN.wav",
    "output": "write to a WAV file instead with --speaker-file OUT.wav",
}
_HOW_TO_CHOOSE = {
    kind: f"choose one with --{kind}-device NAME_OR_INDEX (part of the name, or the index), or {instead}"
    for kind, instead in _FILE_INSTEAD.items()
}


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One PortAudio device as `mio-agent devices` shows it."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_rate: int
    default_input: bool = False
    default_output: bool = False

    def channels(self, kind: DeviceKind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels

    def describe(self) -> str:
        roles = [
            f"{self.max_input_channels} in" if self.max_input_channels else "",
            f"{self.max_output_channels} out" if self.max_output_channels else "",
        ]
        marks = [
            m
            for m, on in (("default input", self.default_input), ("default output", self.default_output))
            if on
        ]
        extra = f", {', '.join(marks)}" if marks else ""
        return (
            f"[{self.index}] {self.name} ({self.host_api}; {' / '.join(r for r in roles if r)}; "
            f"{self.default_rate} Hz{extra})"
        )


def _import_pyaudio() -> Any:
    try:
        # imported by name: PyAudio ships no type information, and only this module touches it
        pyaudio = importlib.import_module("pyaudio")
    except ImportError as exc:
        raise DeviceError(
            "sound devices need the PyAudio package, which is not installed or cannot load PortAudio "
            f"({exc}); install it with `pip install pyaudio` (on Debian/Ubuntu first "
            "`apt-get install portaudio19-dev`), or use --mic-file / --speaker-file instead"
        ) from None
    return pyaudio


@contextlib.contextmanager
def _native_stderr_to(sink: Any) -> Iterator[None]:
    """Send what C libraries write on stderr (ALSA and JACK probing chatter) to `sink` meanwhile."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        # stderr is not a real file (a test capture, an IDE): there is nothing native to silence
        yield
        return
    saved = os.dup(fd)
    try:
        sys.stderr.flush()
        os.dup2(sink.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


@contextlib.contextmanager
def open_pyaudio() -> Iterator[Any]:
    """A PyAudio instance, terminated on exit; PortAudio's probing noise is hidden unless it fails."""
    pa_module = _import_pyaudio()
    with tempfile.TemporaryFile(mode="w+b") as noise:
        try:
            with _native_stderr_to(noise):
                pa = pa_module.PyAudio()
        except Exception as exc:
            noise.seek(0)
            detail = noise.read().decode("utf-8", "replace").strip()[-1500:]
            raise DeviceError(
                f"PortAudio could not start ({exc}); is a sound system (ALSA, PulseAudio, CoreAudio) "
                f"available? Use --mic-file / --speaker-file to run without one.{' Details: ' + detail if detail else ''}"
            ) from None
        try:
            yield pa
        finally:
            with _native_stderr_to(noise):
                pa.terminate()


def devices_of(pa: Any) -> list[DeviceInfo]:
    """The devices an open PyAudio instance sees."""

    def default_index(getter: Any) -> int:
        try:
            return int(getter()["index"])
        except (OSError, KeyError, TypeError):
            return -1

    default_in = default_index(pa.get_default_input_device_info)
    default_out = default_index(pa.get_default_output_device_info)
    out = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        try:
            api = str(pa.get_host_api_info_by_index(int(info["hostApi"]))["name"])
        except (OSError, KeyError):
            api = "?"
        out.append(
            DeviceInfo(
                index=i,
                name=str(info["name"]),
                host_api=api,
                max_input_channels=int(info["maxInputChannels"]),
                max_output_channels=int(info["maxOutputChannels"]),
                default_rate=round(float(info["defaultSampleRate"])),
                default_input=i == default_in,
                default_output=i == default_out,
            )
        )
    return out


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio sees (inputs and outputs), in its index order."""
    with open_pyaudio() as pa:
        return devices_of(pa)


def format_devices(devices: list[DeviceInfo]) -> str:
    """The listing `mio-agent devices` prints: inputs, then outputs, then how to choose."""
    lines = []
    sections: tuple[tuple[DeviceKind, str], ...] = (
        ("input", "Input devices (microphones)"),
        ("output", "Output devices (speakers)"),
    )
    for kind, title in sections:
        found = [d for d in devices if d.channels(kind) > 0]
        lines.append(f"{title}:")
        lines.extend(f"  {d.describe()}" for d in found)
        if not found:
            lines.append("  (none)")
    lines.append("")
    lines.append(
        "Choose with --input-device / --output-device NAME_OR_INDEX (a part of the name, or the index)."
    )
    return "\n".join(lines)


def _listing(devices: list[DeviceInfo], kind: DeviceKind) -> str:
    found = [d.describe() for d in devices if d.channels(kind) > 0]
    return "; ".join(found) if found else "none"


def choose_device(devices: list[DeviceInfo], name_or_index: str | int | None, kind: DeviceKind) -> DeviceInfo:
    """The device `name_or_index` names among `devices` (see `find_device`)."""
    usable = [d for d in devices if d.channels(kind) > 0]
    what = "microphone (input)" if kind == "input" else "speaker (output)"
    if not usable:
        raise DeviceError(
            f"no {what} device found: PortAudio sees {len(devices)} device(s) and none can "
            f"{'record' if kind == 'input' else 'play'} ({', '.join(d.describe() for d in devices) or 'no devices at all'}); "
            f"connect one or check the sound system (ALSA, PulseAudio), or {_FILE_INSTEAD[kind]}"
        )
    if name_or_index is None or name_or_index == "":
        defaults = [d for d in usable if (d.default_input if kind == "input" else d.default_output)]
        return defaults[0] if defaults else usable[0]
    text = str(name_or_index).strip()
    if isinstance(name_or_index, int) or text.lstrip("-").isdigit():
        index = int(text)
        for d in devices:
            if d.index == index:
                if d.channels(kind) == 0:
                    raise DeviceError(
                        f"device {index} ({d.name}) has no {kind} channels; {kind} devices: "
                        f"{_listing(devices, kind)}; {_HOW_TO_CHOOSE[kind]}"
                    )
                return d
        raise DeviceError(
            f"there is no sound device with index {index}; {kind} devices: {_listing(devices, kind)}; "
            f"{_HOW_TO_CHOOSE[kind]}"
        )
    wanted = text.casefold()
    exact = [d for d in usable if d.name.casefold() == wanted]
    if exact:
        return exact[0]
    matches = [d for d in usable if wanted in d.name.casefold()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise DeviceError(
            f"{kind} device name {text!r} is ambiguous, it matches: {'; '.join(d.describe() for d in matches)}; "
            "give more of the name or the index"
        )
    raise DeviceError(
        f"no {kind} device name contains {text!r}; {kind} devices: {_listing(devices, kind)}; {_HOW_TO_CHOOSE[kind]}"
    )


def find_device(name_or_index: str | int | None = None, kind: DeviceKind = "input") -> DeviceInfo:
    """The device to use: None or "" for the system default; an int (or digits) for that index; any
    other text for the device whose name is that text or contains it (case-insensitive).

    Raises DeviceError listing the devices there are and how to choose one when nothing fits, when
    a name matches several devices, or when PortAudio sees no device of that kind at all.
    """
    if kind not in ("input", "output"):
        raise ValueError(f"kind must be 'input' or 'output', got {kind!r}")
    return choose_device(list_devices(), name_or_index, kind)
