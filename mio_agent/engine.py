"""ConversationEngine: one MIO conversation, its token history by turn and the model's KV cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import torch

from mio_agent.constraints import MioConstraint, prefix_allowed_tokens_fn
from mio_agent.conversation import Mode, Part, Turn
from mio_agent.engine_backends import KVBackend, make_backend
from mio_agent.exceptions import ContextOverflowError, EngineBusyError
from mio_agent.history import Segment, close_reply, common_prefix, parts_from_ids
from mio_agent.parser import StreamParser
from mio_agent.presets import GenerationPreset, get_preset
from mio_agent.reply import ReplyOptions, ReplyResult, ReplyStream
from mio_agent.reply_job import ReplyJob, StopReason
from mio_agent.sampling import Sampler
from mio_agent.template import GENERATION_PROMPT, TURN_SEPARATOR, encode_text, system_segment, turn_segment

if TYPE_CHECKING:
    from mio_agent.config import EngineConfig
    from mio_agent.model.loading import LoadedModel

__all__ = ["ConversationEngine", "ReplyOptions", "ReplyResult", "ReplyStream", "default_preset"]

VoiceTimbre = Literal["full", "skip"]
# the fewest new tokens worth starting a reply for when the context is nearly full
MIN_NEW_TOKENS = 16


def default_preset(mode: Mode) -> str:
    """Voice replies sample (TTS preset) so they can stream; text replies use the text preset."""
    return "tts" if mode == "voice" else "text"


class ConversationEngine:
    """One conversation with MIO: turns, cache reuse across turns, streaming replies, cancellation.

    The cache always holds exactly `ids[:cached_tokens]`; a new turn prefills only the ids after
    that. All model work runs on one worker thread per engine, so the event loop never blocks.
    """

    def __init__(
        self,
        lm: LoadedModel,
        *,
        mode: Mode = "voice",
        system: str | None = None,
        max_context: int | None = None,
        max_new_tokens: int = 2048,
        preset: str | None = None,
        seed: int | None = None,
        backend: str = "auto",
        voice_timbre: VoiceTimbre = "full",
    ) -> None:
        if voice_timbre not in ("full", "skip"):
            raise ValueError(f'voice_timbre must be "full" or "skip", got {voice_timbre!r}')
        self._lm = lm
        self.mode: Mode = mode
        self.max_context = int(max_context or lm.max_positions)
        self.max_new_tokens = max_new_tokens
        self.preset: GenerationPreset = get_preset(preset or default_preset(mode))
        self.seed = seed
        self._gen_prompt = encode_text(lm.tokenizer, GENERATION_PROMPT)
        self._sep = encode_text(lm.tokenizer, TURN_SEPARATOR)
        sys_ids = encode_text(lm.tokenizer, system_segment(mode, system))
        self._ids: list[int] = list(sys_ids)
        self._segments: list[Segment] = [Segment("system", 0, len(sys_ids), None)]
        self.voice_timbre: VoiceTimbre = voice_timbre
        # "auto": the static cache and captured decode step on CUDA, Hugging Face's cache elsewhere
        self._backend: KVBackend = make_backend(lm, backend, self.max_context)
        self._cached = 0
        self._busy = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mio-engine")
        self._replies = 0
        # a user turn still growing (speech so far) at the end of `_ids`, not yet one of `_segments`
        self._staged: Segment | None = None

    @classmethod
    def from_config(
        cls,
        lm: LoadedModel,
        engine: EngineConfig,
        *,
        mode: Mode | None = None,
        max_new_tokens: int | None = None,
        preset: str | None = None,
        seed: int | None = None,
    ) -> ConversationEngine:
        """A conversation set up from the config's engine section; keyword arguments override it."""
        return cls(
            lm,
            mode=mode or engine.mode,
            max_context=engine.max_context,
            max_new_tokens=max_new_tokens or engine.max_new_tokens,
            preset=preset,
            seed=engine.seed if seed is None else seed,
            backend=engine.backend,
            voice_timbre=engine.voice_timbre,
        )

    # -- inspection -------------------------------------------------------------------------
    @property
    def ids(self) -> tuple[int, ...]:
        """Every id of the conversation so far (without a generation prompt)."""
        return tuple(self._ids)

    @property
    def cached_tokens(self) -> int:
        """How many leading ids of `ids` the KV cache holds."""
        return self._cached

    @property
    def turns(self) -> tuple[Turn, ...]:
        """The user and assistant turns still in the context."""
        return tuple(s.turn for s in self._segments if s.turn is not None)

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def backend(self) -> str:
        """Where the cache lives: "static" (preallocated, graph-captured step) or "dynamic"."""
        return self._backend.name

    def close(self) -> None:
        """Release the worker thread and the cache (a static slot goes back to the model's pool)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._backend.close()
        self._cached = 0

    # -- history edits ----------------------------------------------------------------------
    @property
    def staged(self) -> Turn | None:
        """The turn put in place by `stage_turn` and not yet committed, if any."""
        return None if self._staged is None else self._staged.turn

    def stage_turn(self, turn: Turn | None) -> None:
        """Put a turn that is still growing (e.g. the user's speech so far) at the end of the history,
        so `prefill()` can work on it while the user speaks.

        Each call replaces the previous staged turn; the cache keeps every id the two have in
        common, so growing speech costs only its new codes (and the few closing ids after them).
        `add_turn`/`reply` commit the final turn the same way; None withdraws it (a false start).
        """
        self._check_idle()
        base = self._ids if self._staged is None else self._ids[: self._staged.start]
        if turn is None:
            self._staged = None
            self._set_ids(list(base))
            return
        ids = encode_text(self._lm.tokenizer, turn_segment(turn))
        self._staged = Segment(turn.role, len(base), len(base) + len(ids), turn)
        self._set_ids(list(base) + ids)

    def add_turn(self, turn: Turn) -> None:
        """Append a whole user (or injected assistant) turn; it is prefilled lazily.

        A staged turn is replaced by this one (keeping the cache for what they share)."""
        self._check_idle()
        base = self._ids if self._staged is None else self._ids[: self._staged.start]
        self._staged = None
        ids = encode_text(self._lm.tokenizer, turn_segment(turn))
        self._segments.append(Segment(turn.role, len(base), len(base) + len(ids), turn))
        self._set_ids(list(base) + ids)

    def replace_last_reply(self, parts: Sequence[Part]) -> None:
        """Rewrite the last assistant turn, e.g. to what playback actually reached after a barge-in."""
        self._check_idle()
        staged = self.staged
        if staged is not None:
            # the user is already speaking again: cut the reply under their staged turn
            self.stage_turn(None)
            try:
                self.replace_last_reply(parts)
            finally:
                self.stage_turn(staged)
            return
        last = self._segments[-1]
        if last.role != "assistant":
            raise ValueError("the last turn is not an assistant reply")
        turn = Turn("assistant", tuple(parts))
        ids = encode_text(self._lm.tokenizer, turn_segment(turn))
        new_ids = self._ids[: last.start] + ids
        self._segments[-1] = Segment("assistant", last.start, len(new_ids), turn)
        self._set_ids(new_ids)

    def _set_ids(self, new_ids: list[int]) -> None:
        """Replace the id list; the cache keeps only the prefix that did not change."""
        keep = common_prefix(self._ids[: self._cached], new_ids)
        self._ids = new_ids
        self._crop(keep)

    def _crop(self, keep: int) -> None:
        if keep >= self._cached:
            return
        self._backend.crop(keep, self._cached)
        self._cached = keep

    def _check_idle(self) -> None:
        if self._busy:
            raise EngineBusyError(
                "a reply is still running in this conversation; cancel it or wait for its end"
            )

    def _fit(self, max_new: int) -> tuple[int, int]:
        """Drop whole oldest turns until prompt and reply fit; returns (max_new_tokens, turns dropped)."""
        closing = 1 + len(self._sep)
        dropped = 0
        freed = 0

        def need() -> int:
            # `_ids` is rebuilt once after the loop: count what the dropped turns free meanwhile
            return len(self._ids) - freed + len(self._gen_prompt) + max_new + closing

        # the newest turn (the one being answered) and the system prompt are never dropped
        while need() > self.max_context and len(self._segments) > 2:
            freed += self._segments.pop(1).length
            dropped += 1
            # a conversation must not restart with an orphan assistant reply
            if len(self._segments) > 2 and self._segments[1].role == "assistant":
                freed += self._segments.pop(1).length
                dropped += 1
        if dropped:
            new_ids: list[int] = []
            for seg in self._segments:
                n = seg.length
                seg_ids = self._ids[seg.start : seg.end]
                seg.start, seg.end = len(new_ids), len(new_ids) + n
                new_ids.extend(seg_ids)
            self._set_ids(new_ids)
        room = self.max_context - (len(self._ids) + len(self._gen_prompt) + closing)
        if room < min(max_new, MIN_NEW_TOKENS):
            raise ContextOverflowError(
                f"the prompt needs {len(self._ids) + len(self._gen_prompt)} of {self.max_context} positions, "
                f"leaving {max(room, 0)} for the reply; shorten the turn (e.g. less speech or fewer images)"
            )
        return min(max_new, room), dropped

    # -- model work (worker thread) -----------------------------------------------------------
    def _forward(self, ids: Sequence[int]) -> torch.Tensor:
        """Feed ids after the cache; returns the last position's logits as float32 [vocab]."""
        logits = self._backend.feed(ids, self._cached)
        self._cached += len(ids)
        return logits

    def _prefill_sync(self) -> tuple[int, float]:
        t0 = time.perf_counter()
        pending = self._ids[self._cached :]
        if pending:
            with torch.inference_mode():
                self._forward(pending)
        return len(pending), time.perf_counter() - t0

    def _generate_sync(self, job: ReplyJob, post: Any) -> None:
        start = self._cached
        try:
            with torch.inference_mode():
                self._backend.generate(job, start, post)
            self._cached = start + len(job.pending) + job.fed
        except (
            Exception
        ) as exc:  # the loop must end in a typed result, never an exception in the caller's loop
            job.reason = "error"
            job.error = f"{type(exc).__name__}: {exc}"
            # a forward that failed half-way may have written part of its keys into the cache
            self._backend.reset()
            self._cached = 0
            job.fed = 0

    # -- public async API ---------------------------------------------------------------------
    async def prefill(self) -> tuple[int, float]:
        """Prefill turns added so far (e.g. while the user is still speaking); (tokens, seconds)."""
        self._check_idle()
        self._busy = True
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._prefill_sync)
        finally:
            self._busy = False

    def _peek_sync(self) -> torch.Tensor:
        with torch.inference_mode():
            pending = self._ids[self._cached :]
            if pending:
                self._forward(pending)
            logits = self._forward(self._gen_prompt).clone()
            self._crop(len(self._ids))
        return logits

    async def peek_logits(self) -> torch.Tensor:
        """Next-token logits after the generation prompt, through the kept cache; the cache ends as
        it began plus any pending turns (used to check cache reuse against a fresh forward)."""
        self._check_idle()
        self._busy = True
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._peek_sync)
        finally:
            self._busy = False

    def _constraint_args(self, opts: ReplyOptions, max_new: int) -> dict[str, Any]:
        """What constrains one reply, shared by the streaming and the beam-search paths."""
        return {
            "mode": "voice" if self.mode == "voice" else "std",
            "max_new_tokens": max_new,
            "stop_ids": self._lm.stop_ids,
            "allow_text": opts.allow_text,
            "allow_speech": opts.allow_speech,
            "allow_image": opts.allow_image,
            "min_speech_codes": opts.min_speech_codes,
            "max_speech_codes": opts.max_speech_codes,
        }

    def _timbre(self, opts: ReplyOptions) -> bool:
        return (self.voice_timbre == "full") if opts.timbre is None else opts.timbre

    def reply(self, turn: Turn | None = None, options: ReplyOptions | None = None) -> ReplyStream:
        """Add `turn` (if any) and start generating the assistant's reply; iterate the stream for events."""
        self._check_idle()
        opts = options or ReplyOptions()
        if turn is None and self._staged is not None:
            turn = self._staged.turn
        if turn is not None:
            self.add_turn(turn)
        preset = get_preset(opts.preset) if opts.preset else self.preset
        max_new, dropped = self._fit(opts.max_new_tokens or self.max_new_tokens)
        seed = self.seed if self.seed is None else self.seed + self._replies
        self._replies += 1
        params = opts.sampling or preset.streaming_params(seed)
        lm = self._lm
        job = ReplyJob(
            pending=self._ids[self._cached :] + self._gen_prompt,
            constraint=MioConstraint(
                lm.vocab, **self._constraint_args(opts, max_new), timbre=self._timbre(opts)
            ),
            sampler=Sampler(params, lm.vocab.vocab_size, self._ids + self._gen_prompt),
            parser=StreamParser(lm.vocab, self._decode_text, stop_ids=lm.stop_ids),
            max_new_tokens=max_new,
            stop_ids=frozenset(lm.stop_ids),
        )
        self._busy = True
        return ReplyStream(
            job,
            len(self._ids) + len(self._gen_prompt),
            dropped,
            executor=self._executor,
            generate=self._generate_sync,
            commit=self._commit,
        )

    async def reply_complete(
        self, turn: Turn | None = None, options: ReplyOptions | None = None
    ) -> ReplyResult:
        """The whole reply at once with the preset's beam search (e.g. `text`: 5 beams), as MIO's
        reference generates; nothing streams, so use it only where nobody waits on the first token.

        Beams do not reuse the kept cache: the prompt is prefilled again for them, and the reply
        joins the history (and the cache, at the next turn) like a streamed one.
        """
        self._check_idle()
        opts = options or ReplyOptions()
        if turn is None and self._staged is not None:
            turn = self._staged.turn
        if turn is not None:
            self.add_turn(turn)
        preset = get_preset(opts.preset) if opts.preset else self.preset
        max_new, dropped = self._fit(opts.max_new_tokens or preset.max_new_tokens)
        lm = self._lm
        prompt = self._ids + self._gen_prompt
        constraint_args = self._constraint_args(opts, max_new)
        allowed = prefix_allowed_tokens_fn(lm.vocab, prompt_length=len(prompt), **constraint_args)
        kwargs = preset.generate_kwargs() | {"max_new_tokens": max_new}
        job = ReplyJob(
            pending=[],
            constraint=MioConstraint(lm.vocab, **constraint_args),
            sampler=Sampler(preset.sampling_params(self.seed), lm.vocab.vocab_size),
            parser=StreamParser(lm.vocab, self._decode_text, stop_ids=lm.stop_ids),
            max_new_tokens=max_new,
            stop_ids=frozenset(lm.stop_ids),
        )

        def run() -> None:
            t0 = time.perf_counter()
            try:
                with torch.inference_mode():
                    out = lm.model.generate(
                        torch.tensor([prompt], device=lm.device),
                        prefix_allowed_tokens_fn=allowed,
                        eos_token_id=list(lm.stop_ids),
                        pad_token_id=lm.vocab.unk,
                        **kwargs,
                    )
                job.generated = [int(t) for t in out[0, len(prompt) :].tolist()]
                job.reason = "stop" if job.generated and job.generated[-1] in job.stop_ids else "length"
            except Exception as exc:  # same contract as streaming: a typed result, not an exception
                job.reason, job.error = "error", f"{type(exc).__name__}: {exc}"
            job.decode_s = time.perf_counter() - t0

        self._busy = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except BaseException:
            self._busy = False
            raise
        return self._commit(job, len(job.generated), len(prompt), dropped)

    def _decode_text(self, ids: Sequence[int]) -> str:
        return str(self._lm.tokenizer.decode(list(ids), skip_special_tokens=False))

    def _commit(self, job: ReplyJob, delivered: int, prompt_tokens: int, dropped: int) -> ReplyResult:
        """Write the reply into the history as exactly the delivered tokens, and cut the cache to match."""
        body = job.generated[:delivered]
        kept = close_reply(self._lm.vocab, body, tuple(job.stop_ids))
        reply_ids = self._gen_prompt + kept + [self._lm.vocab.im_end] + self._sep
        # what the cache holds: the prompt, the generation prompt and every generated token fed back
        cache_ids = self._ids + self._gen_prompt + job.generated[: job.fed]
        parts = parts_from_ids(self._lm.vocab, kept, self._decode_text)
        start = len(self._ids)
        new_ids = self._ids + reply_ids
        self._segments.append(Segment("assistant", start, len(new_ids), Turn("assistant", parts)))
        keep = common_prefix(cache_ids[: self._cached], new_ids)
        self._ids = new_ids
        self._crop(keep)
        self._busy = False
        reason: StopReason = job.reason
        if reason != "error" and delivered < len(job.generated):
            reason = "cancelled"
        return ReplyResult(
            reason=reason,
            token_ids=tuple(body),
            kept_ids=tuple(kept),
            parts=parts,
            prompt_tokens=prompt_tokens,
            prefill_tokens=len(job.pending),
            prefill_s=job.prefill_s,
            first_token_s=job.first_token_s,
            decode_tokens=len(job.generated),
            decode_s=job.decode_s,
            dropped_turns=dropped,
            error=job.error,
        )
