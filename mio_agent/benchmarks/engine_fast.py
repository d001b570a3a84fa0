"""Engine speed at a model's real size: text and voice decode, first token after a staged turn, baselines, roofline."""

from __future__ import annotations

import time
from typing import Any

import torch

from mio_agent.conversation import SpeechPart, TextPart, Turn
from mio_agent.engine import ConversationEngine, ReplyOptions
from mio_agent.model.loading import LoadedModel
from mio_agent.sampling import SamplingParams
from mio_agent.template import GENERATION_PROMPT, encode_text

__all__ = ["bench_engine_fast", "read_bandwidth", "weight_bytes"]

GREEDY = SamplingParams(do_sample=False)
FRAMES_PER_S = 50
# a staged user turn of 3 s of speech, prefilled 200 ms (10 codes) at a time as the user talks
STAGED_CODES = 150
STAGE_STEP = 10


def _sync(lm: LoadedModel) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)


def weight_bytes(lm: LoadedModel) -> int:
    """Bytes one decode step reads: every parameter once (fused views are counted once)."""
    seen: set[int] = set()
    total = 0
    for p in lm.model.parameters():
        key = p.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += p.untyped_storage().nbytes()
    return total


def read_bandwidth(device: torch.device, gib: float = 4.0, repeats: int = 10) -> float:
    """Measured read bandwidth in GB/s: sums over a buffer far larger than any cache."""
    n = int(gib * (1 << 30)) // 2
    if device.type != "cuda":
        n = min(n, 1 << 28)  # 512 MB is enough to leave a CPU's caches behind
    x = torch.ones(n, dtype=torch.bfloat16, device=device)
    x.sum()
    _sync_dev(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        x.sum()
    _sync_dev(device)
    seconds = time.perf_counter() - t0
    del x
    return n * 2 * repeats / seconds / 1e9


def _sync_dev(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


async def _reply(
    engine: ConversationEngine, turn: Turn | None, opts: ReplyOptions
) -> tuple[int, float, float]:
    result = await engine.reply(turn, opts).wait()
    return result.decode_tokens, result.decode_s, (result.first_token_s or 0.0)


async def _text_tok_s(lm: LoadedModel, backend: str, n: int) -> float:
    engine = ConversationEngine(lm, mode="std", max_new_tokens=n, backend=backend)
    try:
        opts = ReplyOptions(sampling=GREEDY, max_new_tokens=n, allow_speech=False, allow_image=False)
        tokens, seconds, _ = await _reply(engine, Turn("user", (TextPart("tell me a long story"),)), opts)
    finally:
        engine.close()
    return tokens / seconds


async def _voice(lm: LoadedModel, backend: str, frames: int, timbre: bool) -> tuple[float, float]:
    """(tokens/s, seconds of speech per wall second) of one voice reply forced to `frames` frames."""
    engine = ConversationEngine(lm, mode="voice", seed=0, backend=backend, max_new_tokens=4 * frames + 8)
    try:
        opts = ReplyOptions(
            max_new_tokens=4 * frames + 8, min_speech_codes=frames, max_speech_codes=frames, timbre=timbre
        )
        tokens, seconds, _ = await _reply(engine, Turn("user", (TextPart("say something"),)), opts)
    finally:
        engine.close()
    return tokens / seconds, (frames / FRAMES_PER_S) / seconds


async def _first_token_after_staging(lm: LoadedModel, backend: str) -> float:
    """Seconds from the end of a 3 s spoken turn (staged and prefilled while spoken) to the first id."""
    engine = ConversationEngine(lm, mode="voice", seed=0, backend=backend, max_new_tokens=16)
    codes = tuple((7 * i) % 1024 for i in range(STAGED_CODES))
    try:
        for k in range(STAGE_STEP, STAGED_CODES, STAGE_STEP):
            engine.stage_turn(Turn("user", (SpeechPart(codes[:k]),)))
            await engine.prefill()
        _sync(lm)
        _, _, first = await _reply(
            engine, Turn("user", (SpeechPart(codes),)), ReplyOptions(max_new_tokens=16)
        )
    finally:
        engine.close()
    return first


def _hf_static_tok_s(lm: LoadedModel, prompt: list[int], n: int) -> float:
    """Hugging Face `generate` with a static cache (and, on CUDA, its own compile), prefill subtracted."""
    x = torch.tensor([prompt], device=lm.device)
    kw: dict[str, Any] = {"do_sample": False, "pad_token_id": lm.vocab.unk, "cache_implementation": "static"}
    with torch.inference_mode():
        lm.model.generate(x, max_new_tokens=n, min_new_tokens=n, **kw)  # warm-up: compile, capture
        _sync(lm)
        t0 = time.perf_counter()
        lm.model.generate(x, max_new_tokens=1, min_new_tokens=1, **kw)
        _sync(lm)
        t1 = time.perf_counter()
        lm.model.generate(x, max_new_tokens=n, min_new_tokens=n, **kw)
        _sync(lm)
        t2 = time.perf_counter()
    return n / max((t2 - t1) - (t1 - t0), 1e-9)


async def bench_engine_fast(
    lm: LoadedModel,
    *,
    backend: str = "auto",
    text_tokens: int = 256,
    voice_frames: int = 100,
    repeats: int = 3,
    hf_baseline: bool = True,
) -> dict[str, Any]:
    """Decode figures of the engine on `lm` (its configured backend) and the baselines, in one run."""
    if lm.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(lm.device)
    await _text_tok_s(lm, backend, 8)  # warm-up: kernels chosen, slot taken from the pool
    text = max([await _text_tok_s(lm, backend, text_tokens) for _ in range(repeats)])
    voice = max([await _voice(lm, backend, voice_frames, True) for _ in range(repeats)])
    skip = max([await _voice(lm, backend, voice_frames, False) for _ in range(repeats)])
    first = min([await _first_token_after_staging(lm, backend) for _ in range(repeats)])
    eager = await _text_tok_s(lm, "dynamic", min(text_tokens, 64))
    engine = ConversationEngine(lm, mode="std", backend=backend)
    used = engine.backend
    prompt = [
        *engine.ids,
        *encode_text(lm.tokenizer, "<|im_start|>user\nhello<|im_end|>\n" + GENERATION_PROMPT),
    ]
    engine.close()
    hf = _hf_static_tok_s(lm, prompt, min(text_tokens, 128)) if hf_baseline else None
    bandwidth = read_bandwidth(lm.device)
    wbytes = weight_bytes(lm)
    fast = lm.fast
    figures: dict[str, Any] = {
        "backend": used,
        "cuda_graphs": bool(fast and fast.info.cuda_graphs),
        "compiled": bool(fast and fast.info.compiled),
        "engine_tok_s": round(text, 1),
        "eager_tok_s": round(eager, 1),
        "speedup_vs_eager": round(text / eager, 2),
        "voice_tok_s": round(voice[0], 1),
        "voice_rtf": round(voice[1], 3),
        "voice_tok_s_skip": round(skip[0], 1),
        "voice_rtf_skip": round(skip[1], 3),
        "first_token_ms": round(first * 1e3, 1),
        "hf_static_tok_s": None if hf is None else round(hf, 1),
        "engine_vs_hf_static": None if hf is None else round(text / hf, 3),
        "read_bandwidth_gb_s": round(bandwidth, 1),
        "weight_gb": round(wbytes / 1e9, 2),
        "roofline_tok_s": round(bandwidth * 1e9 / wbytes, 1),
        "roofline_fraction": round(text * wbytes / (bandwidth * 1e9), 3),
        "capture_s": round(fast.info.capture_s, 2) if fast else None,
    }
    if lm.device.type == "cuda":
        figures["gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(lm.device) / 1e9, 2)
    if fast and fast.info.notes:
        figures["notes"] = "; ".join(fast.info.notes)
    return figures
