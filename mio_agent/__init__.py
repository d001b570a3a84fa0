"""mio-agent: a modular agent framework and streaming voice assistant around the MIO model."""

from __future__ import annotations

from mio_agent.exceptions import (
    CodecError,
    ConfigError,
    ContextOverflowError,
    ConversationError,
    DeviceError,
    EngineBusyError,
    EventError,
    MioAgentError,
    ModelFilesError,
    PluginError,
    StoreError,
    SubscriptionClosed,
    VocabularyError,
)
from mio_agent.markers import hookimpl

__version__ = "0.1.0"

__all__ = [
    "CodecError",
    "ConfigError",
    "ContextOverflowError",
    "ConversationError",
    "DeviceError",
    "EngineBusyError",
    "EventError",
    "MioAgentError",
    "ModelFilesError",
    "PluginError",
    "StoreError",
    "SubscriptionClosed",
    "VocabularyError",
    "__version__",
    "hookimpl",
]
