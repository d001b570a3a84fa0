"""Next-token selection for the streaming loop: repetition penalty, temperature, top-k, top-p, seeded sampling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mio_agent.exceptions import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["Sampler", "SamplingParams"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How the next token is chosen, with Hugging Face `generate` semantics.

    `do_sample` False is greedy (argmax after the repetition penalty; temperature, top-k and
    top-p are then ignored, as in `generate`). `top_k` 0 and `top_p` 1.0 turn those filters off.
    `repetition_penalty` 1.0 is none. `seed` makes sampling reproducible; None draws from torch's
    global generator.
    """

    do_sample: bool
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(
                f"temperature must be above 0, got {self.temperature} (use do_sample=False for greedy)"
            )
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be 0 (off) or positive, got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise ConfigError(f"repetition_penalty must be above 0, got {self.repetition_penalty}")
        if self.seed is not None and self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed}")


class Sampler:
    """Chooses one token per step from float logits [vocab].

    The repetition penalty covers every id in `context_ids` (the prompt) and every id passed to
    `observe` (the reply so far): positive logits are divided by it, negative ones multiplied.
    The ids seen are kept as a boolean mask, so a step costs O(vocab), never O(context).
    """

    def __init__(self, params: SamplingParams, vocab_size: int, context_ids: Sequence[int] = ()) -> None:
        # torch is imported where it is used, so the presets and SamplingParams load without it
        import torch

        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.params = params
        self.vocab_size = vocab_size
        self._seen = torch.zeros(vocab_size, dtype=torch.bool)
        ids = [int(t) for t in context_ids]
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"context id {bad[0]} is outside the vocabulary of {vocab_size}")
        if ids:
            self._seen[ids] = True
        self._generator: torch.Generator | None = None

    def observe(self, token_id: int) -> None:
        """Record a chosen token (for the repetition penalty)."""
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside the vocabulary of {self.vocab_size}")
        self._seen[token_id] = True

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """The scores sampling draws from: penalty, then (when sampling) temperature, top-k, top-p.

        Filtered ids are -inf. `logits` is not modified.
        """
        import torch

        if logits.dim() != 1 or logits.shape[0] != self.vocab_size:
            raise ValueError(f"logits must have shape [{self.vocab_size}], got {list(logits.shape)}")
        p = self.params
        if self._seen.device != logits.device:
            self._seen = self._seen.to(logits.device)
        scores = logits
        if p.repetition_penalty != 1.0:
            penalized = torch.where(scores < 0, scores * p.repetition_penalty, scores / p.repetition_penalty)
            scores = torch.where(self._seen, penalized, scores)
        if not p.do_sample:
            return scores
        if p.temperature != 1.0:
            scores = scores / p.temperature
        if p.top_k > 0:
            k = min(p.top_k, scores.shape[-1])
            kth = torch.topk(scores, k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=False)
            cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            # drop the low tail whose mass stays within 1 - top_p; the most likely id always stays
            drop_sorted = cumulative <= (1 - p.top_p)
            drop_sorted[-1] = False
            drop = drop_sorted.scatter(0, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        return scores

    def select(self, logits: torch.Tensor) -> int:
        """The next token id: argmax when not sampling, else a draw from softmax(process(logits))."""
        return int(self.select_tensor(logits).item())

    def select_tensor(self, logits: torch.Tensor) -> torch.Tensor:
        """As `select`, but the id stays where the logits are (a [1] long tensor): no host sync, so
        a GPU decode loop can queue the next step before it reads the id."""
        import torch

        flat = logits.reshape(-1) if logits.dim() == 2 and logits.shape[0] == 1 else logits
        scores = self.process(flat)
        if not self.params.do_sample:
            return torch.argmax(scores).reshape(1)
        # inverse CDF rather than torch.multinomial, ten times slower over MIO's vocabulary on a CPU;
        # a float64 running sum never lets an id of probability 0 (exactly 0 in float32) be drawn
        cdf = torch.softmax(scores.float(), dim=-1).double().cumsum(dim=-1)
        u = torch.rand(1, dtype=torch.float64, device=cdf.device, generator=self._generator_for(cdf.device))
        idx = torch.searchsorted(cdf, u * cdf[-1], right=True)
        return idx.clamp_(max=self.vocab_size - 1)

    def observe_tensor(self, token: torch.Tensor) -> None:
        """As `observe`, for an id still on the device (from `select_tensor`)."""
        if self._seen.device != token.device:
            self._seen = self._seen.to(token.device)
        self._seen[token] = True

    def _generator_for(self, device: torch.device) -> torch.Generator | None:
        import torch

        if self.params.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.params.seed)
        return self._generator
