"""The SpeechTokenizer codec that loads MIO's official speech tokenizer files."""

from __future__ import annotations

from mio_agent.codecs.speech.audio import load_audio, write_wav
from mio_agent.codecs.speech.bench import benchmark_speech_codec, synthetic_speech
from mio_agent.codecs.speech.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_speech_tokenizer,
    random_model,
    save_speech_tokenizer,
    save_tiny_speech_tokenizer,
)
from mio_agent.codecs.speech.codec import SpeechCodec
from mio_agent.codecs.speech.codes import SpeechCodes
from mio_agent.codecs.speech.config import FULL_CONFIG, TINY_CONFIG, SpeechTokenizerConfig
from mio_agent.codecs.speech.model import SpeechTokenizerModel
from mio_agent.codecs.speech.resample import StreamingResampler, resample
from mio_agent.codecs.speech.streaming import DecodeSchedule, StreamingSpeechDecoder, StreamingSpeechEncoder

__all__ = [
    "CONFIG_FILE",
    "FULL_CONFIG",
    "TINY_CONFIG",
    "WEIGHTS_FILE",
    "DecodeSchedule",
    "SpeechCodec",
    "SpeechCodes",
    "SpeechTokenizerConfig",
    "SpeechTokenizerModel",
    "StreamingResampler",
    "StreamingSpeechDecoder",
    "StreamingSpeechEncoder",
    "benchmark_speech_codec",
    "load_audio",
    "load_speech_tokenizer",
    "random_model",
    "resample",
    "save_speech_tokenizer",
    "save_tiny_speech_tokenizer",
    "synthetic_speech",
    "write_wav",
]
