"""SpeechCodec: audio to MIO's speech codes and back, whole or streaming, over our SpeechTokenizer model."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mio_agent.codecs.speech.audio import to_model_rate
from mio_agent.codecs.speech.checkpoint import load_speech_tokenizer
from mio_agent.codecs.speech.codes import SpeechCodes, check_layers
from mio_agent.codecs.speech.config import SpeechTokenizerConfig
from mio_agent.codecs.speech.model import SpeechTokenizerModel
from mio_agent.codecs.speech.streaming import (
    DecodeMode,
    DecodeSchedule,
    StreamingSpeechDecoder,
    StreamingSpeechEncoder,
)
from mio_agent.exceptions import ConfigError

__all__ = ["SpeechCodec"]

# content (RVQ layer 1) plus MIO's three timbre layers
_MIO_LAYERS = 4


class SpeechCodec:
    """Encode audio to content (and timbre) codes and decode codes to 16 kHz mono float32 audio.

    Input audio of any rate and channel count is down-mixed (mean of the channels) and resampled
    (windowed sinc, torchaudio's default filter, as MIO's reference does) to 16 kHz at the edge.
    One codec serves every session of a process: its model calls (whole and streaming) are
    serialised by a lock (`guard`), and on CUDA they run on the codec's own CUDA stream, so they
    overlap the language model's decode steps instead of queueing behind them. Streams (encoders,
    decoders) are not shared between threads: each belongs to one utterance or reply.
    """

    def __init__(self, model: SpeechTokenizerModel, *, device: str | torch.device = "cpu") -> None:
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise ConfigError(f"speech codec device {device!r} is not a torch device: {exc}") from exc
        self.model = model.to(self.device).eval()
        self.config: SpeechTokenizerConfig = model.config
        self.sample_rate: int = self.config.sample_rate
        self.hop_length: int = self.config.hop_length
        self.codebook_size: int = self.config.codebook_size
        self._lock = threading.RLock()
        self._stream: Any = (
            torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]
            if self.device.type == "cuda"
            else None
        )

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Hold the codec for one model call: the lock, and on CUDA the codec's own stream."""
        with self._lock:
            if self._stream is None:
                yield
                return
            # the inputs were queued on the caller's stream; the codec's stream waits for them
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._stream):
                yield
            # results leave through .cpu() inside the block, which waits for this stream

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu") -> SpeechCodec:
        """Load `DIR/config.json` and `DIR/SpeechTokenizer.pt` (strict); ModelFilesError names a bad file."""
        return cls(load_speech_tokenizer(directory), device=device)

    def encode(self, audio: np.ndarray, sample_rate: int, *, timbre: bool = True) -> SpeechCodes:
        """Codes of one utterance: audio is [samples] or [channels, samples], float or integer PCM.

        With timbre=False only the content layer is computed (what user speech carries in MIO).
        """
        mono = to_model_rate(audio, sample_rate, self.sample_rate)
        codes = self.encode_samples(mono, _MIO_LAYERS if timbre else 1)
        content = tuple(codes[0].tolist())
        if not timbre:
            return SpeechCodes(content=content)
        return SpeechCodes(
            content=content,
            timbre=(tuple(codes[1].tolist()), tuple(codes[2].tolist()), tuple(codes[3].tolist())),
        )

    def encode_samples(self, samples: np.ndarray, layers: int) -> np.ndarray:
        """Codes [layers, ceil(n / hop)] of the first `layers` RVQ layers for float32 mono audio at 16 kHz."""
        x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).to(self.device)
        with self.guard(), torch.inference_mode():
            codes = self.model.encode(x[None, None, :], layers)
        return codes[:, 0, :].cpu().numpy()

    def decode(self, content: Sequence[int], timbre: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """Float32 mono 16 kHz audio (hop_length samples per frame) from content and optional timbre codes.

        Content alone is the fast, lower-fidelity preview; MIO's replies carry three timbre layers.
        """
        layers = check_layers(content, timbre, codebook_size=self.codebook_size, n_q=self.config.n_q)
        codes = torch.from_numpy(layers).to(self.device)[:, None, :]
        with self.guard(), torch.inference_mode():
            audio = self.model.decode(codes)
        return audio[0, 0].cpu().numpy().astype(np.float32, copy=False)

    def decode_block(self, codes: Sequence[int]) -> np.ndarray:
        """Decode speech code indices in MIO's block layout (content, then timbre offset by 1024 * layer)."""
        parsed = SpeechCodes.from_block_codes(codes, self.codebook_size)
        return self.decode(parsed.content, parsed.timbre)

    def stream_decoder(
        self,
        *,
        mode: DecodeMode = "full",
        first_chunk_frames: int = 4,
        growth: float = 2.0,
        max_chunk_frames: int = 50,
    ) -> StreamingSpeechDecoder:
        """A streaming decoder: "full" four-part audio or a "content" preview, in growing chunks (frames)."""
        schedule = DecodeSchedule(
            first_chunk_frames=first_chunk_frames, growth=growth, max_chunk_frames=max_chunk_frames
        )
        return StreamingSpeechDecoder(self, mode=mode, schedule=schedule)

    def stream_encoder(
        self, *, chunk_frames: int = 25, left_context_frames: int = 25, lookahead_frames: int = 10
    ) -> StreamingSpeechEncoder:
        """A streaming encoder of content codes for audio pushed while the user speaks (sizes in frames)."""
        return StreamingSpeechEncoder(
            self,
            chunk_frames=chunk_frames,
            left_context_frames=left_context_frames,
            lookahead_frames=lookahead_frames,
        )
