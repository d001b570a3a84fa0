"""The project's exception hierarchy; every error a user can cause is one of these.

    MioAgentError
     ├── ConfigError            bad or missing configuration key
     ├── ConversationError      a conversation file or turn breaks a rule
     ├── ModelFilesError        model, tokenizer or codec files missing or malformed
     ├── VocabularyError        a tokenizer lacks MIO's special tokens or code tokens
     ├── ContextOverflowError   a single turn cannot fit in the model's context
     ├── CodecError             audio, image or code input a codec cannot take
     ├── EngineBusyError        a second reply was asked of one conversation at once
     ├── DeviceError            an audio or video device is missing, busy or cannot be opened
     ├── PluginError            a plugin cannot load, declares something invalid, or failed
     ├── EventError             an event has a missing, unknown or malformed field (also a ValueError)
     ├── SubscriptionClosed     a bus subscription was read after it closed
     ├── ProtocolError          a WebSocket message or frame breaks the protocol
     └── StoreError             the session store or a session's files cannot be opened, read or written

Messages name what failed and how to fix it.
"""

from __future__ import annotations

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
    "ProtocolError",
    "StoreError",
    "SubscriptionClosed",
    "VocabularyError",
]


class MioAgentError(Exception):
    """Base of every error mio-agent raises on purpose."""


class ConfigError(MioAgentError):
    """A configuration key is missing, of the wrong type or out of range."""


class ConversationError(MioAgentError):
    """A conversation (file or turn) breaks one of MIO's layout rules."""


class ModelFilesError(MioAgentError):
    """Model, tokenizer or codec files are missing or do not match the official layout."""


class VocabularyError(MioAgentError):
    """A tokenizer lacks MIO's special tokens or code tokens."""


class ContextOverflowError(MioAgentError):
    """A turn (or the generation prompt) alone does not fit in the model's context."""


class CodecError(MioAgentError):
    """Audio, image or codes that a codec cannot take."""


class EngineBusyError(MioAgentError):
    """A conversation was asked for a second reply while one is still running."""


class EventError(MioAgentError, ValueError):
    """An event (built in code or read from a message) has a missing, unknown or malformed field."""


class SubscriptionClosed(MioAgentError):
    """`Subscription.get()` was called on a closed subscription; `reason` says why it closed."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"subscription {name!r} is closed: {reason}")
        self.name = name
        self.reason = reason


class StoreError(MioAgentError):
    """The session store cannot be opened, read or written, or was asked for something it lacks."""


class PluginError(MioAgentError):
    """A plugin cannot be loaded, declares something invalid, or failed while it ran."""


class DeviceError(MioAgentError):
    """An audio or video device is missing, busy, or cannot be opened in any format we can convert."""


class ProtocolError(MioAgentError):
    """A WebSocket message or frame that breaks the protocol (docs/protocol.md): what and why."""

    def __init__(self, message: str, *, code: str = "protocol.invalid", ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.ref = ref
