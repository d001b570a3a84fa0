"""The WebSocket protocol, sans I/O: message and frame encoding, validation and the replay buffer."""

from mio_agent.protocol.frames import HEADER, Frame, FrameKind, pack_frame, unpack_frame
from mio_agent.protocol.messages import (
    CLIENT_MESSAGES,
    PROTOCOL_VERSION,
    ClientMessage,
    decode_client_message,
    encode_json,
    error_message,
    event_message,
    welcome_message,
)
from mio_agent.protocol.replay import ReplayBuffer

__all__ = [
    "CLIENT_MESSAGES",
    "HEADER",
    "PROTOCOL_VERSION",
    "ClientMessage",
    "Frame",
    "FrameKind",
    "ReplayBuffer",
    "decode_client_message",
    "encode_json",
    "error_message",
    "event_message",
    "pack_frame",
    "unpack_frame",
    "welcome_message",
]
