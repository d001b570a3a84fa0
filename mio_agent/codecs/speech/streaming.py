"""Streaming speech: decode codes to audio chunk by chunk, encode 20 ms frames to content codes as they come."""

# Decoding. The decoder is a convolution, a one-directional LSTM, then upsampling convolutions.
# The stream carries the LSTM state from chunk to chunk and recomputes only the convolutions'
# context: `pre_margin_frames` (3) past the newest frame for the first convolution and
# `post_margin_frames` (4) each side of a chunk for the upsampling stack. Every output sample is
# therefore computed from exactly the inputs a whole decode would use, and the joined stream equals
# the whole decode up to float rounding (measured max abs difference 0 to 3e-7; tests allow 1e-5),
# so no crossfade is needed and there are no clicks. The price is a look-ahead of 7 frames (140 ms
# of audio, 7 codes per layer).
#
# MIO writes a spoken reply as N content codes, then N timbre0, N timbre1, N timbre2 codes. A
# faithful four-part decode of frame i needs all four layers at i, so it can only start in the
# timbre2 phase, after 3N of the block's 4N codes; from then on every timbre2 code completes a
# frame. Two modes, pick per use:
# - "full": four-part audio, the reference's quality; first audio after 3N + 4 + 7 codes.
# - "content": a preview from content codes alone (RVQ layer 1 through the same decoder): audio
#   from the 11th code on, but muffled and in a generic voice; timbre codes are checked and ignored.
# A player that wants both runs two decoders and switches at a frame boundary.
#
# Chunks grow: `first_chunk_frames` (small, for latency), then times `growth` up to
# `max_chunk_frames` (large chunks amortise the recomputed context and the per-call overhead).
#
# Encoding. The encoder ends in a bidirectional LSTM, so no code is final until the utterance is;
# the stream approximates. Its convolutional features are computed once, exactly, as audio arrives;
# codes come out `chunk_frames` at a time, each chunk encoded through the LSTM with
# `left_context_frames` of past and `lookahead_frames` of future features. A frame's code is out at
# most chunk + look-ahead + feature margin frames after it was spoken, so at the end of an
# utterance only that tail remains to encode. Chunked codes differ from whole-utterance codes where
# the truncated LSTM context moves an embedding across a codebook boundary (tests measure it).

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from mio_agent.codecs.speech.audio import to_float32, to_mono
from mio_agent.codecs.speech.codes import PART_NAMES, check_layer
from mio_agent.codecs.speech.layers import LSTMState
from mio_agent.codecs.speech.resample import StreamingResampler
from mio_agent.exceptions import CodecError, ConfigError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from mio_agent.codecs.speech.config import SpeechTokenizerConfig
    from mio_agent.codecs.speech.model import SpeechTokenizerModel


class CodecHandle(Protocol):
    """What a stream needs of its codec (`SpeechCodec` is one): the model, where it runs, its sizes,
    and the guard that serialises model calls. Streams depend on this, not on the codec class, so
    the codec can build streams without an import circle."""

    model: SpeechTokenizerModel
    config: SpeechTokenizerConfig
    device: torch.device
    sample_rate: int
    hop_length: int
    codebook_size: int

    def guard(self) -> AbstractContextManager[None]: ...


__all__ = ["CodecHandle", "DecodeSchedule", "StreamingSpeechDecoder", "StreamingSpeechEncoder"]

DecodeMode = Literal["full", "content"]


@dataclass(frozen=True)
class DecodeSchedule:
    """Chunk sizes of a streaming decode, in code frames (20 ms each)."""

    first_chunk_frames: int = 4
    growth: float = 2.0
    max_chunk_frames: int = 50

    def __post_init__(self) -> None:
        if self.first_chunk_frames < 1 or self.max_chunk_frames < self.first_chunk_frames:
            raise ConfigError(
                f"decode schedule needs 1 <= first_chunk_frames <= max_chunk_frames, got "
                f"{self.first_chunk_frames} and {self.max_chunk_frames}"
            )
        if not self.growth >= 1.0:
            raise ConfigError(f"decode schedule growth must be >= 1, got {self.growth}")

    def next_size(self, size: int) -> int:
        """The chunk size after one of `size` frames."""
        return min(self.max_chunk_frames, math.ceil(size * self.growth))


class _FrameDecoder:
    """Quantized frames in, audio chunks out; carries the LSTM state, recomputes convolution context."""

    def __init__(self, codec: CodecHandle, schedule: DecodeSchedule) -> None:
        self._decoder = codec.model.decoder
        self._hop = codec.hop_length
        self._pre = self._decoder.pre_margin_frames
        self._post = self._decoder.post_margin_frames
        self._schedule = schedule
        self._chunk = schedule.first_chunk_frames
        dim = codec.config.dimension
        self._z = torch.zeros(1, dim, 0, device=codec.device)
        self._z_start = 0
        self._y: Tensor | None = None
        self._y_start = 0
        self._lstm_done = 0
        self._state: LSTMState | None = None
        self.emitted = 0

    @property
    def lookahead_frames(self) -> int:
        return self._pre + self._post

    @property
    def frames(self) -> int:
        return self._z_start + self._z.shape[-1]

    def add(self, z: Tensor) -> list[np.ndarray]:
        self._z = torch.cat([self._z, z], dim=-1)
        chunks: list[np.ndarray] = []
        while self.emitted + self._chunk + self.lookahead_frames <= self.frames:
            end = self.emitted + self._chunk
            if self._lstm_done < end + self._post:
                self._run_lstm(final=False)
            chunks.append(self._render(self.emitted, end, final=False))
            self._chunk = self._schedule.next_size(self._chunk)
        return chunks

    def finish(self) -> list[np.ndarray]:
        self._run_lstm(final=True)
        if self.emitted >= self.frames:
            return []
        return [self._render(self.emitted, self.frames, final=True)]

    def _run_lstm(self, *, final: bool) -> None:
        start = self._lstm_done
        # the first convolution needs `_pre` frames on the right, except at the true end
        upto = self.frames if final else self.frames - self._pre
        if upto <= start:
            return
        lo = max(0, start - self._pre)
        window = self._z[..., lo - self._z_start :]
        x = self._decoder.pre(window)[..., start - lo : upto - lo]
        y, self._state = self._decoder.lstm_step(x, self._state)
        if self._y is None:
            self._y, self._y_start = y, start
        else:
            self._y = torch.cat([self._y, y], dim=-1)
        self._lstm_done = upto
        keep = max(0, upto - self._pre)
        self._z = self._z[..., keep - self._z_start :]
        self._z_start = keep

    def _render(self, a: int, b: int, *, final: bool) -> np.ndarray:
        assert self._y is not None
        lo = max(0, a - self._post)
        hi = self._lstm_done if final else b + self._post
        window = self._y[..., lo - self._y_start : hi - self._y_start]
        audio = self._decoder.post(window)[0, 0, (a - lo) * self._hop : (b - lo) * self._hop]
        keep = max(0, b - self._post)
        self._y = self._y[..., keep - self._y_start :]
        self._y_start = keep
        self.emitted = b
        return audio.detach().cpu().numpy().astype(np.float32, copy=True)


class StreamingSpeechDecoder:
    """Codes pushed a few at a time in, 16 kHz float32 audio chunks out (see the module docstring).

    Push codes per layer (`push_content`, `push_timbre`) or as MIO writes them (`push`); each call
    returns the chunks that became ready, and `finish` the rest. Joined, the chunks equal
    `SpeechCodec.decode` of the same codes up to float rounding.
    """

    def __init__(self, codec: CodecHandle, *, mode: DecodeMode = "full", schedule: DecodeSchedule) -> None:
        if mode not in ("full", "content"):
            raise ConfigError(f"stream decoder mode must be 'full' or 'content', got {mode!r}")
        self._codec = codec
        self.mode: DecodeMode = mode
        self.schedule = schedule
        self._layers = 4 if mode == "full" else 1
        self._parts: list[list[int]] = [[] for _ in PART_NAMES]
        self._fed = 0
        self._block_part = 0
        self._frames = _FrameDecoder(codec, schedule)
        self._finished = False

    @property
    def lookahead_frames(self) -> int:
        """Frames past a chunk's end that must be known before it is decoded (convolution context)."""
        return self._frames.lookahead_frames

    @property
    def frames_decoded(self) -> int:
        """Code frames turned into audio so far (each is `hop_length` samples)."""
        return self._frames.emitted

    @property
    def samples_emitted(self) -> int:
        """Audio samples returned so far."""
        return self._frames.emitted * self._codec.hop_length

    def push_content(self, codes: Sequence[int]) -> list[np.ndarray]:
        """Add content codes (RVQ layer 1, 0..1023)."""
        return self._add(0, codes)

    def push_timbre(self, layer: int, codes: Sequence[int]) -> list[np.ndarray]:
        """Add codes of timbre layer `layer` (0, 1 or 2: RVQ layers 2-4, 0..1023 each)."""
        if layer not in (0, 1, 2):
            raise CodecError(f"timbre layer must be 0, 1 or 2, got {layer}")
        return self._add(layer + 1, codes)

    def push(self, codes: Sequence[int]) -> list[np.ndarray]:
        """Add speech code indices as a MIO block carries them (layer * 1024 + code), in block order."""
        self._check_open()
        size = self._codec.codebook_size
        chunks: list[np.ndarray] = []
        run: list[int] = []
        for raw in codes:
            value = int(raw)
            part = value // size
            if value < 0 or part >= len(PART_NAMES):
                raise CodecError(f"speech code index {value} is outside 0..{len(PART_NAMES) * size - 1}")
            if part < self._block_part:
                raise CodecError(
                    f"a {PART_NAMES[part]} code came after {PART_NAMES[self._block_part]} codes; "
                    "a speech block holds content, timbre0, timbre1, timbre2 in that order"
                )
            if part > self._block_part:
                if run:
                    chunks += self._add(self._block_part, run)
                    run = []
                for earlier in range(1, part):
                    if len(self._parts[earlier]) != len(self._parts[0]):
                        have, need = len(self._parts[earlier]), len(self._parts[0])
                        raise CodecError(
                            f"{PART_NAMES[part]} began with {PART_NAMES[earlier]} at {have} of {need} codes; "
                            "the parts of a speech block must be of equal length"
                        )
                self._block_part = part
            run.append(value - part * size)
        if run:
            chunks += self._add(self._block_part, run)
        return chunks

    def finish(self) -> list[np.ndarray]:
        """Decode what is left; in "full" mode the four parts must be complete and of equal length.

        A refused finish leaves the stream open, so missing codes can still be pushed.
        """
        self._check_open()
        lengths = [len(p) for p in self._parts]
        if lengths[0] == 0:
            raise CodecError("the speech stream ended without any content codes")
        if self.mode == "full" and len(set(lengths)) != 1:
            shown = ", ".join(f"{name} {n}" for name, n in zip(PART_NAMES, lengths, strict=True))
            raise CodecError(
                f"the speech block ended with parts of unequal length ({shown}); it cannot be decoded"
            )
        self._finished = True
        with self._codec.guard(), torch.inference_mode():
            return self._frames.finish()

    def _check_open(self) -> None:
        if self._finished:
            raise CodecError(
                "this speech stream is finished; start a new one with SpeechCodec.stream_decoder()"
            )

    def _add(self, part: int, codes: Sequence[int]) -> list[np.ndarray]:
        self._check_open()
        values = check_layer(codes, part, self._codec.codebook_size)
        # each layer may run at most as far as the one before it: true both of MIO's order (a whole
        # layer after another) and of frame-by-frame interleaving
        if part > 0 and len(self._parts[part]) + values.size > len(self._parts[part - 1]):
            raise CodecError(
                f"{PART_NAMES[part]} would have {len(self._parts[part]) + values.size} codes but "
                f"{PART_NAMES[part - 1]} has {len(self._parts[part - 1])}; push each layer no further "
                "than the one before it (the parts of a speech block are of equal length)"
            )
        self._parts[part].extend(values.tolist())
        ready = min(len(self._parts[k]) for k in range(self._layers))
        if ready <= self._fed:
            return []
        block = torch.tensor(
            [p[self._fed : ready] for p in self._parts[: self._layers]],
            dtype=torch.long,
            device=self._codec.device,
        )
        self._fed = ready
        with self._codec.guard(), torch.inference_mode():
            z = self._codec.model.quantizer.decode(block[:, None, :])
            return self._frames.add(z)


class StreamingSpeechEncoder:
    """Audio frames (any rate and channel count, e.g. 20 ms from a microphone) in, content codes out.

    `push` returns the codes that became final; `finish` the rest. See the module docstring for
    what "final" means for a bidirectional encoder.
    """

    def __init__(
        self,
        codec: CodecHandle,
        *,
        chunk_frames: int = 25,
        left_context_frames: int = 25,
        lookahead_frames: int = 10,
    ) -> None:
        if chunk_frames < 1 or left_context_frames < 0 or lookahead_frames < 0:
            raise ConfigError(
                "stream encoder needs chunk_frames >= 1 and non-negative context, got "
                f"{chunk_frames}, {left_context_frames}, {lookahead_frames}"
            )
        self._codec = codec
        self._encoder = codec.model.encoder
        self._hop = codec.hop_length
        self._margin = self._encoder.feature_margin_frames
        self.chunk_frames = chunk_frames
        self.left_context_frames = left_context_frames
        self.lookahead_frames = lookahead_frames
        self._rate: int | None = None
        self._resampler: StreamingResampler | None = None
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_start = 0
        self._audio_total = 0
        self._features: Tensor | None = None
        self._features_start = 0
        self._features_done = 0
        self._codes: list[int] = []
        self._finished = False

    @property
    def codes(self) -> tuple[int, ...]:
        """Every content code emitted so far."""
        return tuple(self._codes)

    @property
    def max_delay_frames(self) -> int:
        """Frames of audio after a frame that may arrive before its code is out (the look-ahead bound)."""
        return self.chunk_frames + self.lookahead_frames + self._margin

    def push(self, frame: np.ndarray, sample_rate: int) -> list[int]:
        """Add audio ([samples] or [channels, samples], float or int PCM); return newly final codes."""
        if self._finished:
            raise CodecError(
                "this speech stream is finished; start a new one with SpeechCodec.stream_encoder()"
            )
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
            raise CodecError(f"sample rate must be a positive integer number of Hz, got {sample_rate!r}")
        if self._rate is None:
            self._rate = int(sample_rate)
            self._resampler = StreamingResampler(self._rate, self._codec.sample_rate)
        elif sample_rate != self._rate:
            raise CodecError(
                f"sample rate changed from {self._rate} to {sample_rate} Hz within one utterance"
            )
        if np.asarray(frame).size == 0:
            return []
        mono = to_mono(to_float32(frame, "audio frame"))
        assert self._resampler is not None
        self._append(self._resampler.push(mono))
        return self._advance(final=False)

    def finish(self) -> list[int]:
        """Encode the tail of the utterance; returns its codes."""
        if self._finished:
            raise CodecError(
                "this speech stream is finished; start a new one with SpeechCodec.stream_encoder()"
            )
        self._finished = True
        if self._resampler is not None:
            self._append(self._resampler.finish())
        if self._audio_total == 0:
            raise CodecError("the speech stream ended without any audio")
        return self._advance(final=True)

    def _append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._audio = np.concatenate([self._audio, samples])
            self._audio_total += samples.size

    def _advance(self, *, final: bool) -> list[int]:
        if not final:
            # features are computed only when a chunk of codes is due: one recomputed margin per chunk
            available = self._audio_total // self._hop - self._margin
            if len(self._codes) + self.chunk_frames + self.lookahead_frames > available:
                return []
        with self._codec.guard(), torch.inference_mode():
            self._extend_features(final=final)
            return self._emit_codes(final=final)

    def _extend_features(self, *, final: bool) -> None:
        hop, start = self._hop, self._features_done
        target = -(-self._audio_total // hop) if final else self._audio_total // hop - self._margin
        if target <= start:
            return
        lo = max(0, start - self._margin)
        hi = self._audio_total if final else (target + self._margin) * hop
        audio = self._audio[lo * hop - self._audio_start : hi - self._audio_start]
        x = torch.from_numpy(np.ascontiguousarray(audio)).to(self._codec.device)[None, None, :]
        new = self._encoder.features(x)[..., start - lo : target - lo]
        if self._features is None:
            self._features, self._features_start = new, start
        else:
            self._features = torch.cat([self._features, new], dim=-1)
        self._features_done = target
        keep = max(0, target - self._margin) * hop
        self._audio = self._audio[keep - self._audio_start :]
        self._audio_start = keep

    def _emit_codes(self, *, final: bool) -> list[int]:
        out: list[int] = []
        while self._features is not None:
            a = len(self._codes)
            b = self._features_done if final else a + self.chunk_frames
            hi = self._features_done if final else b + self.lookahead_frames
            if b <= a or hi > self._features_done:
                break
            lo = max(0, a - self.left_context_frames)
            window = self._features[..., lo - self._features_start : hi - self._features_start]
            embeddings = self._encoder.head(window)[..., a - lo : b - lo]
            codes = self._codec.model.quantizer.encode(embeddings, 1)[0, 0].tolist()
            self._codes += codes
            out += codes
            keep = max(0, b - self.left_context_frames)
            self._features = self._features[..., keep - self._features_start :]
            self._features_start = keep
        return out
