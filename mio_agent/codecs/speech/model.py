"""The SpeechTokenizer network: SEANet encoder, residual VQ, SEANet decoder, with the official key names."""

from __future__ import annotations

from torch import Tensor, nn

from mio_agent.codecs.speech.config import SpeechTokenizerConfig
from mio_agent.codecs.speech.quantizer import ResidualVectorQuantizer
from mio_agent.codecs.speech.seanet import SEANetDecoder, SEANetEncoder

__all__ = ["SpeechTokenizerModel"]


class SpeechTokenizerModel(nn.Module):
    """Our implementation of SpeechTokenizer; its state dict is the official `SpeechTokenizer.pt` layout.

    Audio is float [batch, 1, samples] at `config.sample_rate`; codes are [layers, batch, frames].
    """

    def __init__(self, config: SpeechTokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = SEANetEncoder(config)
        # the HuBERT-distillation projection: in the file, never used to encode or decode
        self.transform: nn.Module = (
            nn.Linear(config.dimension, config.semantic_dimension)
            if config.dimension != config.semantic_dimension
            else nn.Identity()
        )
        self.quantizer = ResidualVectorQuantizer(config.dimension, config.codebook_size, config.n_q)
        self.decoder = SEANetDecoder(config)

    def encode(self, audio: Tensor, n_q: int) -> Tensor:
        """Audio [batch, 1, samples] to codes [n_q, batch, ceil(samples / hop)] of the first n_q layers."""
        return self.quantizer.encode(self.encoder(audio), n_q)

    def decode(self, codes: Tensor) -> Tensor:
        """Codes [k, batch, frames] of the first k layers to audio [batch, 1, frames * hop]."""
        out: Tensor = self.decoder(self.quantizer.decode(codes))
        return out
