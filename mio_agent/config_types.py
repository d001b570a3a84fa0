"""Configuration sections: frozen dataclasses holding each key's default and what a valid value is."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeAlias

__all__ = [
    "SECTIONS",
    "AudioConfig",
    "CameraConfig",
    "CodecsConfig",
    "Config",
    "Dtype",
    "EngineConfig",
    "LogConfig",
    "LogLevel",
    "ModelConfig",
    "MqttConfig",
    "PluginsConfig",
    "RouterConfig",
    "ServerConfig",
    "SessionConfig",
]

Dtype: TypeAlias = Literal["auto", "float32", "float16", "bfloat16"]
LogLevel: TypeAlias = Literal["debug", "info", "warning", "error", "critical"]

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _meta(
    expect: str,
    check: Callable[[Any], bool] | None = None,
    *,
    normalize: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """A config field's metadata: what a valid value looks like (for errors) and a value check."""
    return {"expect": expect, "check": check, "normalize": normalize}


def _positive(v: Any) -> bool:
    return bool(v > 0)


def _non_negative(v: Any) -> bool:
    return bool(v >= 0)


def _device(v: Any) -> bool:
    return _DEVICE.fullmatch(v) is not None


def _non_empty(v: Any) -> bool:
    return bool(v.strip())


def _names(v: Any) -> bool:
    return all(name.strip() for name in v)


def _lower(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


_DEVICE_EXPECT = '"auto", "cpu", "cuda", "cuda:N" or "mps"'
_PATH_EXPECT = "a path (string) or null"


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Which MIO model to run, and where."""

    section: ClassVar[str] = "model"

    path: str | None = field(default=None, metadata=_meta(_PATH_EXPECT + " (null: the embedded model)"))
    embedded_seed: int = field(default=0, metadata=_meta("a non-negative integer", _non_negative))
    device: str = field(default="auto", metadata=_meta(_DEVICE_EXPECT, _device))
    dtype: Dtype = field(default="auto", metadata=_meta('"auto", "float32", "float16" or "bfloat16"'))


@dataclass(frozen=True, slots=True)
class CodecsConfig:
    """Speech and image codecs; a null path means the folder of that name inside the model folder."""

    section: ClassVar[str] = "codecs"

    speech_tokenizer: str | None = field(default=None, metadata=_meta(_PATH_EXPECT))
    image_tokenizer: str | None = field(default=None, metadata=_meta(_PATH_EXPECT))
    diffusion: str | None = field(default=None, metadata=_meta(_PATH_EXPECT))
    diffusion_steps: int = field(default=20, metadata=_meta("a positive integer", _positive))
    device: str = field(default="auto", metadata=_meta(_DEVICE_EXPECT, _device))


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The conversation engine: mode, context, and sampling overrides (null: the preset's value)."""

    section: ClassVar[str] = "engine"

    mode: Literal["voice", "std"] = field(default="voice", metadata=_meta('"voice" or "std"'))
    max_context: int = field(default=4096, metadata=_meta("a positive integer", _positive))
    max_new_tokens: int = field(default=2048, metadata=_meta("a positive integer", _positive))
    preset: str | None = field(
        default=None, metadata=_meta("a preset name or null (chosen by mode)", _non_empty)
    )
    seed: int | None = field(default=None, metadata=_meta("a non-negative integer or null", _non_negative))
    temperature: float | None = field(
        default=None, metadata=_meta("a non-negative number or null", _non_negative)
    )
    top_p: float | None = field(
        default=None, metadata=_meta("a number in (0, 1] or null", lambda v: 0 < v <= 1)
    )
    top_k: int | None = field(
        default=None, metadata=_meta("a non-negative integer or null (0: no top-k)", _non_negative)
    )
    repetition_penalty: float | None = field(
        default=None, metadata=_meta("a positive number or null", _positive)
    )
    backend: Literal["auto", "static", "dynamic"] = field(
        default="auto", metadata=_meta('"auto", "static" or "dynamic"')
    )
    cuda_graphs: bool = field(default=True, metadata=_meta("true or false"))
    compile: bool = field(default=False, metadata=_meta("true or false"))
    batch_sessions: int = field(
        default=0,
        metadata=_meta("a non-negative integer (0: each conversation decodes alone)", _non_negative),
    )
    min_decode_tok_s: float = field(
        default=0.0,
        metadata=_meta("a non-negative number of tokens per second (0: no check)", _non_negative),
    )
    voice_timbre: Literal["full", "skip"] = field(default="full", metadata=_meta('"full" or "skip"'))


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Where sessions are stored."""

    section: ClassVar[str] = "session"

    dir: str | None = field(default=None, metadata=_meta(_PATH_EXPECT + " (null: the user data folder)"))

    def resolved_dir(self) -> Path:
        """`dir` with ~ expanded, or <user data dir>/mio-agent/sessions when it is null."""
        if self.dir is not None:
            return Path(self.dir).expanduser()
        import platformdirs

        return Path(platformdirs.user_data_dir("mio-agent")) / "sessions"


@dataclass(frozen=True, slots=True)
class PluginsConfig:
    """Which plugins stay off."""

    section: ClassVar[str] = "plugins"

    disabled: tuple[str, ...] = field(
        default=(), metadata=_meta("a list of plugin names, e.g. [storytelling]", _names)
    )
    timeout_s: float = field(
        default=600.0, metadata=_meta("a positive number of seconds a capability may run", _positive)
    )


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Logging."""

    section: ClassVar[str] = "log"

    level: LogLevel = field(
        default="info", metadata=_meta('"debug", "info", "warning", "error" or "critical"', normalize=_lower)
    )


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """Microphone, speaker, voice activity and interruptions of the voice loop."""

    section: ClassVar[str] = "audio"

    input_device: str | None = field(
        default=None, metadata=_meta("a device name (or part of one), an index, or null (the default)")
    )
    output_device: str | None = field(
        default=None, metadata=_meta("a device name (or part of one), an index, or null (the default)")
    )
    echo_cancel: bool = field(default=True, metadata=_meta("true or false"))
    vad: Literal["webrtc", "silero"] = field(default="webrtc", metadata=_meta('"webrtc" or "silero"'))
    vad_aggressiveness: int = field(default=2, metadata=_meta("0, 1, 2 or 3", lambda v: 0 <= v <= 3))
    pre_roll_ms: int = field(default=300, metadata=_meta("milliseconds, 0 or more", _non_negative))
    min_speech_ms: int = field(default=200, metadata=_meta("milliseconds, 0 or more", _non_negative))
    end_silence_ms: int = field(default=600, metadata=_meta("milliseconds, 0 or more", _non_negative))
    barge_in_ms: int = field(
        default=300, metadata=_meta("milliseconds of speech that interrupt a reply, 0 or more", _non_negative)
    )
    max_speech_s: float = field(default=30.0, metadata=_meta("a positive number of seconds", _positive))


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """The camera (or a video file) whose keyframes join voice turns."""

    section: ClassVar[str] = "camera"

    device: str | None = field(
        default=None, metadata=_meta("a camera index, a video file, or null (no camera)")
    )
    keep: int = field(default=4, metadata=_meta("a positive number of keyframes", _positive))
    per_turn: int = field(default=1, metadata=_meta("keyframes added to a turn, 0 or more", _non_negative))
    fps: float = field(default=5.0, metadata=_meta("frames per second looked at, positive", _positive))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The WebSocket server (`mio-agent serve`)."""

    section: ClassVar[str] = "server"

    host: str = field(default="127.0.0.1", metadata=_meta("an address to bind", _non_empty))
    port: int = field(
        default=8765, metadata=_meta("a port number (0: any free port)", lambda v: 0 <= v < 65536)
    )
    token: str | None = field(default=None, metadata=_meta("a secret string or null", _non_empty))
    allowed_origins: tuple[str, ...] = field(
        default=(),
        metadata=_meta("a list of Origins browsers may connect from (same host is always allowed)"),
    )
    allowed_hosts: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "a list of host names clients may use in the Host header besides loopback ones (no port)"
        ),
    )
    max_sessions: int = field(default=64, metadata=_meta("a positive integer", _positive))
    max_sessions_per_client: int = field(default=8, metadata=_meta("a positive integer", _positive))
    max_message_bytes: int = field(default=8 << 20, metadata=_meta("a positive number of bytes", _positive))
    replay_events: int = field(default=1024, metadata=_meta("a positive number of events", _positive))
    send_queue: int = field(default=512, metadata=_meta("a positive number of messages", _positive))


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """The MQTT bridge: events published under `prefix`, commands read from `prefix`/<session>/command."""

    section: ClassVar[str] = "mqtt"

    enabled: bool = field(default=False, metadata=_meta("true or false"))
    host: str = field(default="localhost", metadata=_meta("a broker host name or address", _non_empty))
    port: int = field(default=1883, metadata=_meta("a port number", lambda v: 0 < v < 65536))
    prefix: str = field(default="mio-agent", metadata=_meta("a topic prefix without wildcards", _non_empty))
    username: str | None = field(default=None, metadata=_meta("a user name or null"))
    password: str | None = field(default=None, metadata=_meta("a password or null"))
    client_id: str | None = field(default=None, metadata=_meta("an MQTT client id or null (generated)"))
    publish_audio: bool = field(default=False, metadata=_meta("true or false"))
    queue: int = field(
        default=1000, metadata=_meta("a positive number of messages kept while offline", _positive)
    )


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Routing voice turns to capabilities."""

    section: ClassVar[str] = "router"

    transcribe: Literal["auto", "always", "never"] = field(
        default="auto",
        metadata=_meta('"auto" (when a capability has spoken triggers), "always" or "never"'),
    )
    transcriber: str = field(
        default="transcribe",
        metadata=_meta(
            "the name of a capability turning speech into text (e.g. an ASR plugin's)", _non_empty
        ),
    )


_SECTIONS: tuple[type[Any], ...] = (
    ModelConfig,
    CodecsConfig,
    EngineConfig,
    SessionConfig,
    PluginsConfig,
    LogConfig,
    AudioConfig,
    CameraConfig,
    ServerConfig,
    MqttConfig,
    RouterConfig,
)
SECTIONS: Mapping[str, type[Any]] = {cls.section: cls for cls in _SECTIONS}
"""Every section class by its name in YAML, in the order of `Config`'s fields."""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; `Config()` is the built-in defaults (= configs/default.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    codecs: CodecsConfig = field(default_factory=CodecsConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    router: RouterConfig = field(default_factory=RouterConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dicts (lists for tuples), ready for yaml.safe_dump or json.dumps."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            out[name] = {
                f.name: list(v) if isinstance(v := getattr(section, f.name), tuple) else v
                for f in fields(section)
            }
        return out
