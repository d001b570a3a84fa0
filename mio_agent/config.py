"""Configuration: frozen dataclasses with the defaults, read from YAML, the environment and overrides."""

# The sections and their loading live in config_* modules, one concern each; this module gathers
# them so that `from mio_agent.config import X` stays the one import everyone (plugins too) uses.
from __future__ import annotations

from mio_agent.config_load import ENV_PREFIX, load_config
from mio_agent.config_types import (
    AudioConfig,
    CameraConfig,
    CodecsConfig,
    Config,
    EngineConfig,
    LogConfig,
    ModelConfig,
    MqttConfig,
    PluginsConfig,
    RouterConfig,
    ServerConfig,
    SessionConfig,
)
from mio_agent.config_types import Dtype as Dtype
from mio_agent.config_types import LogLevel as LogLevel

# Not in __all__ (it belongs to mio_agent.exceptions), but code written against the old module imported it here.
from mio_agent.exceptions import ConfigError as ConfigError

__all__ = [
    "ENV_PREFIX",
    "AudioConfig",
    "CameraConfig",
    "CodecsConfig",
    "Config",
    "EngineConfig",
    "LogConfig",
    "ModelConfig",
    "MqttConfig",
    "PluginsConfig",
    "RouterConfig",
    "ServerConfig",
    "SessionConfig",
    "load_config",
]
