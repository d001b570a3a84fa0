"""SEANet encoder (convolutions, BiLSTM) and decoder (LSTM, transposed convolutions) of SpeechTokenizer."""

from __future__ import annotations

import math

from torch import Tensor, nn

from mio_agent.codecs.speech.config import SpeechTokenizerConfig
from mio_agent.codecs.speech.layers import (
    LSTMState,
    PaddedConv1d,
    PaddedConvTranspose1d,
    ResidualBlock,
    SkipLSTM,
)

__all__ = ["SEANetDecoder", "SEANetEncoder"]

# the release's first and last convolution kernels (SEANet defaults, not in config.json)
_KERNEL = 7
_LAST_KERNEL = 7
# residual branches run at half width (SEANet's `compress`)
_COMPRESS = 2


def _residual_reach(cfg: SpeechTokenizerConfig) -> int:
    """Samples each side one residual stack can look, at its own rate."""
    return sum(
        (cfg.residual_kernel_size - 1) * cfg.dilation_base**j // 2 for j in range(cfg.n_residual_layers)
    )


def _margin_frames(cfg: SpeechTokenizerConfig, ratios: list[int]) -> int:
    """Frames each side beyond which the conv stack at audio rate cannot see (a safe upper bound).

    Walks the stack from the audio end: a residual stack reaches `_residual_reach` samples at its
    rate, a (transposed) strided convolution with kernel 2r at most 2 samples of the slower side.
    """
    samples = (_KERNEL - 1) // 2
    scale = 1
    for r in ratios:
        samples += _residual_reach(cfg) * scale + 2 * r * scale
        scale *= r
    return math.ceil(samples / cfg.hop_length) + 1


class SEANetEncoder(nn.Module):
    """Audio [batch, 1, samples] to embeddings [batch, dimension, ceil(samples / hop)].

    Split in two for streaming: `features` (the convolutions, whose reach is bounded) and `head`
    (the bidirectional LSTM and the last convolution, which see the whole span they are given).
    """

    def __init__(self, cfg: SpeechTokenizerConfig) -> None:
        super().__init__()
        nf = cfg.n_filters
        layers: list[nn.Module] = [PaddedConv1d(1, nf, _KERNEL)]
        mult = 1
        # the encoder takes the strides in reverse: the fine ones first, at audio rate
        for ratio in reversed(cfg.strides):
            for j in range(cfg.n_residual_layers):
                layers.append(
                    ResidualBlock(
                        mult * nf,
                        kernel_size=cfg.residual_kernel_size,
                        dilation=cfg.dilation_base**j,
                        compress=_COMPRESS,
                    )
                )
            layers += [nn.ELU(alpha=1.0), PaddedConv1d(mult * nf, mult * nf * 2, 2 * ratio, stride=ratio)]
            mult *= 2
        self.lstm_index = len(layers)
        layers.append(SkipLSTM(mult * nf, num_layers=cfg.lstm_layers, bidirectional=cfg.bidirectional))
        width = mult * nf * (2 if cfg.bidirectional else 1)
        layers += [nn.ELU(alpha=1.0), PaddedConv1d(width, cfg.dimension, _LAST_KERNEL)]
        self.model = nn.Sequential(*layers)
        self.feature_margin_frames = _margin_frames(cfg, list(reversed(cfg.strides)))
        self.head_margin_frames = (_LAST_KERNEL - 1) // 2

    def features(self, audio: Tensor) -> Tensor:
        """The convolutional part: [batch, 1, samples] to [batch, channels, frames]."""
        x = audio
        for layer in list(self.model)[: self.lstm_index]:
            x = layer(x)
        return x

    def head(self, features: Tensor) -> Tensor:
        """The LSTM and last convolution: [batch, channels, frames] to [batch, dimension, frames]."""
        x = features
        for layer in list(self.model)[self.lstm_index :]:
            x = layer(x)
        return x

    def forward(self, audio: Tensor) -> Tensor:
        return self.head(self.features(audio))


class SEANetDecoder(nn.Module):
    """Embeddings [batch, dimension, frames] to audio [batch, 1, frames * hop].

    Its LSTM runs one way, so `pre`, `lstm_step` and `post` let a stream carry the LSTM state and
    recompute only a few frames of convolution context at each edge.
    """

    def __init__(self, cfg: SpeechTokenizerConfig) -> None:
        super().__init__()
        nf = cfg.n_filters
        mult = 2 ** len(cfg.strides)
        layers: list[nn.Module] = [
            PaddedConv1d(cfg.dimension, mult * nf, _KERNEL),
            # the release's decoder LSTM is one-directional whatever config.json says (`bidirectional`
            # is the encoder's), which is what makes streaming decode exact
            SkipLSTM(mult * nf, num_layers=cfg.lstm_layers, bidirectional=False),
        ]
        for ratio in cfg.strides:
            layers += [
                nn.ELU(alpha=1.0),
                PaddedConvTranspose1d(mult * nf, mult * nf // 2, 2 * ratio, stride=ratio),
            ]
            for j in range(cfg.n_residual_layers):
                layers.append(
                    ResidualBlock(
                        mult * nf // 2,
                        kernel_size=cfg.residual_kernel_size,
                        dilation=cfg.dilation_base**j,
                        compress=_COMPRESS,
                    )
                )
            mult //= 2
        layers += [nn.ELU(alpha=1.0), PaddedConv1d(nf, 1, _LAST_KERNEL)]
        self.model = nn.Sequential(*layers)
        self.pre_margin_frames = (_KERNEL - 1) // 2
        self.post_margin_frames = _margin_frames(cfg, list(reversed(cfg.strides)))

    def pre(self, z: Tensor) -> Tensor:
        """The first convolution, at frame rate; it looks `pre_margin_frames` each side."""
        conv = self.model[0]
        assert isinstance(conv, PaddedConv1d)
        out: Tensor = conv(z)
        return out

    def lstm_step(self, x: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        """The LSTM over a span of frames, continuing from `state`."""
        lstm = self.model[1]
        assert isinstance(lstm, SkipLSTM)
        return lstm.step(x, state)

    def post(self, y: Tensor) -> Tensor:
        """Upsampling to audio; an output sample looks at most `post_margin_frames` frames each side."""
        x = y
        for layer in list(self.model)[2:]:
            x = layer(x)
        return x

    def forward(self, z: Tensor) -> Tensor:
        return self.post(self.lstm_step(self.pre(z), None)[0])
