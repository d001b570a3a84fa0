"""Generation presets: the reference's table, speech-sized budgets, and streaming without beams."""

from __future__ import annotations

import pytest

from mio_agent import presets
from mio_agent.exceptions import ConfigError
from mio_agent.presets import PRESETS, get_preset, preset_names
from mio_agent.sampling import SamplingParams

# (beams, sampling, repetition_penalty, top_p) from the reference's table
REFERENCE = {
    "text": (5, False, 1.0, 1.0),
    "image_generation": (5, False, 1.15, 0.7),
    "tts": (1, True, 1.15, 0.7),
    "speech_generation": (5, False, 2.0, 0.7),
    "speech_to_speech": (5, False, 1.15, 0.7),
    "interleaved": (1, True, 1.15, 0.7),
}


def test_presets_match_the_reference_table() -> None:
    assert set(preset_names()) == set(REFERENCE)
    for name, (beams, sample, penalty, top_p) in REFERENCE.items():
        p = get_preset(name)
        assert (p.name, p.num_beams, p.do_sample, p.repetition_penalty, p.top_p) == (
            name,
            beams,
            sample,
            penalty,
            top_p,
        )
        assert p.temperature == 1.0 and p.length_penalty == 1.0


def test_speech_presets_have_room_for_seconds_of_speech() -> None:
    for name in ("tts", "speech_generation", "speech_to_speech"):
        # 200 tokens per second of audio: at least 10 s
        assert get_preset(name).max_new_tokens >= 2000
    assert get_preset("text").max_new_tokens == 512


def test_unknown_preset_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        get_preset("poetry")
    for name in REFERENCE:
        assert name in str(err.value)
    assert "poetry" in str(err.value)


def test_sampling_params_carry_the_preset_and_seed() -> None:
    assert get_preset("tts").sampling_params(7) == SamplingParams(
        do_sample=True, temperature=1.0, top_p=0.7, top_k=0, repetition_penalty=1.15, seed=7
    )


def test_beam_presets_stream_greedily_with_their_penalty() -> None:
    for name, (beams, sample, penalty, _) in REFERENCE.items():
        p = get_preset(name)
        s = p.streaming_params(3)
        if beams > 1:
            assert not p.streams
            assert s == SamplingParams(do_sample=False, repetition_penalty=penalty, seed=3)
        else:
            assert p.streams and s == p.sampling_params(3) and s.do_sample == sample


def test_generate_kwargs_for_the_beam_path() -> None:
    kw = get_preset("speech_to_speech").generate_kwargs()
    assert kw == {
        "num_beams": 5,
        "do_sample": False,
        "repetition_penalty": 1.15,
        "length_penalty": 1.0,
        "max_new_tokens": presets.SPEECH_MAX_NEW_TOKENS,
    }
    assert get_preset("tts").generate_kwargs()["top_p"] == 0.7


def test_presets_are_read_only() -> None:
    with pytest.raises(TypeError):
        PRESETS["mine"] = get_preset("text")  # type: ignore[index]


def test_public_names() -> None:
    for name in presets.__all__:
        assert hasattr(presets, name)
