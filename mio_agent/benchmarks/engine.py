"""Engine benchmark: per-turn prefill cost with the kept cache, and streaming decode speed."""

from __future__ import annotations

import random
import resource
import statistics
import string
import time
from collections.abc import Sequence
from typing import Any

import torch

from mio_agent.conversation import TextPart, Turn
from mio_agent.engine import ConversationEngine, ReplyOptions
from mio_agent.model.loading import LoadedModel
from mio_agent.sampling import SamplingParams
from mio_agent.template import GENERATION_PROMPT, encode_text

__all__ = ["bench_engine"]

GREEDY = SamplingParams(do_sample=False)


def _user_text(rng: random.Random, n: int) -> str:
    # the embedded tokenizer is byte-level, so n ASCII characters are n tokens
    return "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(n))


def _sync(lm: LoadedModel) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)


def _forward_all(lm: LoadedModel, ids: Sequence[int]) -> float:
    """Seconds to prefill `ids` from scratch: what a server without a kept cache pays each turn."""
    from transformers import DynamicCache

    x = torch.tensor([list(ids)], device=lm.device)
    _sync(lm)
    t0 = time.perf_counter()
    with torch.inference_mode():
        lm.model(
            input_ids=x,
            cache=DynamicCache(config=lm.model.config),
            use_cache=True,
            logits_to_keep=1,
        )
    _sync(lm)
    return time.perf_counter() - t0


async def _conversation(
    lm: LoadedModel, *, turns: int, user_tokens: int, reply_tokens: int, seed: int, backend: str = "auto"
) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    gen = encode_text(lm.tokenizer, GENERATION_PROMPT)
    engine = ConversationEngine(lm, mode="std", max_new_tokens=reply_tokens, seed=seed, backend=backend)
    kept: list[float] = []
    scratch: list[float] = []
    opts = ReplyOptions(max_new_tokens=reply_tokens, sampling=GREEDY, allow_speech=False, allow_image=False)
    try:
        for _ in range(turns):
            engine.add_turn(Turn("user", (TextPart(_user_text(rng, user_tokens)),)))
            scratch.append(_forward_all(lm, list(engine.ids) + gen))
            result = await engine.reply(None, opts).wait()
            kept.append(result.prefill_s)
    finally:
        engine.close()
    return kept, scratch


def _bare_decode(lm: LoadedModel, prompt: Sequence[int], n: int) -> float:
    """Tokens/s of a plain greedy `model.forward` step loop with a DynamicCache."""
    from transformers import DynamicCache

    cache = DynamicCache(config=lm.model.config)
    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([list(prompt)], device=lm.device), cache=cache, use_cache=True)
        tok = int(out.logits[0, -1].argmax())
        _sync(lm)
        t0 = time.perf_counter()
        for _ in range(n - 1):
            x = torch.tensor([[tok]], device=lm.device)
            logits = lm.model(input_ids=x, cache=cache, use_cache=True, logits_to_keep=1).logits
            tok = int(logits[0, -1].argmax())
        _sync(lm)
    return n / (time.perf_counter() - t0)


def _generate_decode(lm: LoadedModel, prompt: Sequence[int], n: int) -> float:
    """Tokens/s of Hugging Face `generate` (greedy), its prefill subtracted."""
    x = torch.tensor([list(prompt)], device=lm.device)
    with torch.inference_mode():
        _sync(lm)
        t0 = time.perf_counter()
        lm.model.generate(x, max_new_tokens=1, min_new_tokens=1, do_sample=False, pad_token_id=lm.vocab.unk)
        _sync(lm)
        t1 = time.perf_counter()
        lm.model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=lm.vocab.unk)
        _sync(lm)
        t2 = time.perf_counter()
    return n / max((t2 - t1) - (t1 - t0), 1e-9)


async def _engine_decode(
    lm: LoadedModel, text: str, n: int, backend: str = "auto"
) -> tuple[float, int, list[int]]:
    engine = ConversationEngine(lm, mode="std", max_new_tokens=n, backend=backend)
    try:
        turn = Turn("user", (TextPart(text),))
        engine.add_turn(turn)
        prompt = list(engine.ids) + encode_text(lm.tokenizer, GENERATION_PROMPT)
        opts = ReplyOptions(max_new_tokens=n, sampling=GREEDY, allow_speech=False, allow_image=False)
        result = await engine.reply(None, opts).wait()
    finally:
        engine.close()
    return result.decode_tokens / result.decode_s, result.decode_tokens, prompt


async def bench_engine(
    lm: LoadedModel,
    *,
    turns: int = 10,
    user_tokens: int = 48,
    reply_tokens: int = 24,
    decode_tokens: int = 128,
    repeats: int = 3,
    seed: int = 0,
    backend: str = "auto",
) -> dict[str, Any]:
    """Measure the engine against its baselines on `lm`; every figure comes from this one run."""
    torch.manual_seed(seed)
    rng = random.Random(seed + 1)
    # warm-up: first calls allocate and pick kernels
    await _conversation(lm, turns=2, user_tokens=user_tokens, reply_tokens=4, seed=seed, backend=backend)
    kept_runs, scratch_runs = [], []
    for r in range(repeats):
        k, s = await _conversation(
            lm,
            turns=turns,
            user_tokens=user_tokens,
            reply_tokens=reply_tokens,
            seed=seed + r,
            backend=backend,
        )
        kept_runs.append(k)
        scratch_runs.append(s)
    kept = [statistics.median(run[i] for run in kept_runs) for i in range(turns)]
    scratch = [statistics.median(run[i] for run in scratch_runs) for i in range(turns)]

    text = _user_text(rng, user_tokens)
    engine_tps, bare_tps, gen_tps = [], [], []
    n_decoded = decode_tokens
    for _ in range(repeats):
        tps, n_decoded, prompt = await _engine_decode(lm, text, decode_tokens, backend)
        engine_tps.append(tps)
        bare_tps.append(_bare_decode(lm, prompt, n_decoded))
        gen_tps.append(_generate_decode(lm, prompt, n_decoded))
    e, b, g = max(engine_tps), max(bare_tps), max(gen_tps)
    params = sum(p.numel() for p in lm.model.parameters())
    return {
        "bench": "engine",
        "device": str(lm.device),
        "dtype": str(lm.dtype).removeprefix("torch."),
        "params_m": round(params / 1e6, 1),
        "turns": turns,
        "user_tokens_per_turn": user_tokens,
        "reply_tokens_per_turn": reply_tokens,
        "prefill_ms_turn1": round(kept[0] * 1e3, 2),
        "prefill_ms_last": round(kept[-1] * 1e3, 2),
        "turn_cost_ratio": round(kept[-1] / kept[0], 3),
        "reprefill_ms_turn1": round(scratch[0] * 1e3, 2),
        "reprefill_ms_last": round(scratch[-1] * 1e3, 2),
        "turn_cost_ratio_reprefill": round(scratch[-1] / scratch[0], 3),
        "decode_tokens": n_decoded,
        "engine_tok_s": round(e, 1),
        "forward_tok_s": round(b, 1),
        "generate_tok_s": round(g, 1),
        "decode_vs_forward": round(e / b, 3),
        "decode_vs_generate": round(e / g, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
