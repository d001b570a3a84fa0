"""Make the golden tokenizer folders and reference ids under tests/model/data/sp_tokenizers/.

Not run by the test suite; run it again only to regenerate the goldens. The reference ids come
from the SLOW `LlamaTokenizer` of transformers 4.34.0 (what MIO's `tokenization_mio.py` loads),
installed in a throwaway virtual environment outside the repository:

    python3.11 -m venv /tmp/tf434
    /tmp/tf434/bin/pip install transformers==4.34.0 sentencepiece 'tokenizers<0.15' protobuf
    .venv/bin/python tests/model/make_tokenizer_goldens.py --reference-python /tmp/tf434/bin/python

Stage 1 (this venv) trains two tiny sentencepiece BPE models with Yi's layout (ids 0..7 `<unk>`,
`<|startoftext|>`, `<|endoftext|>`, three reserved, `<|im_start|>`, `<|im_end|>`; byte fallback,
split digits) and writes the strings to tokenize: the golden prompts of tests/test_template.py
and tests/cli/test_prompt_cmd.py, their engine segments, and random strings. Stage 2 runs this
same file under the reference Python: for each variant it builds a `LlamaTokenizer`, adds MIO's
tokens, writes the folder with `save_pretrained`, loads it back with
`LlamaTokenizer.from_pretrained(folder)` as MIO does and records `tok(text)["input_ids"]` (MIO's
call) and `tok.encode(text, add_special_tokens=False)` (the engine's call) for every string.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "sp_tokenizers"
YI_HEAD = ["<unk>", "<|startoftext|>", "<|endoftext|>", "<|reserved_3|>", "<|reserved_4|>", "<|reserved_5|>",
           "<|im_start|>", "<|im_end|>"]  # fmt: skip
MIO_SIX = ["[SPCH]", "</spch>", "[IMG]", "<spch>", "</image>", "<image>"]
VOCAB_SIZE = 1000

# name: sentencepiece model, legacy, how MIO's six are added, code tokens (full or reduced),
# add_bos_token, how the added tokens are given (4.34's default for strings strips whitespace
# on both sides; "exact" gives AddedToken(lstrip=False, rstrip=False)), and how the folder is
# saved ("4.34": with added_tokens_decoder; "old": added_tokens.json and special_tokens_map.json
# only, as transformers before 4.34 wrote them).
VARIANTS: dict[str, dict[str, Any]] = {
    "yi_legacy_added_full": {"model": "yi", "legacy": True, "six": "added", "codes": "full", "bos": False,
                             "tokens": "str", "save": "old"},
    "yi_legacy_added": {"model": "yi", "legacy": True, "six": "added", "codes": "reduced", "bos": False,
                        "tokens": "str", "save": "4.34"},
    "yi_legacy_special": {"model": "yi", "legacy": True, "six": "special", "codes": "reduced", "bos": False,
                          "tokens": "str", "save": "4.34"},
    "yi_legacy_exact": {"model": "yi", "legacy": True, "six": "special", "codes": "reduced", "bos": True,
                        "tokens": "exact", "save": "4.34"},
    "yi_nonlegacy_added": {"model": "yi", "legacy": False, "six": "added", "codes": "reduced", "bos": False,
                           "tokens": "exact", "save": "4.34"},
    "yi_nonlegacy_special": {"model": "yi", "legacy": False, "six": "special", "codes": "reduced", "bos": False,
                             "tokens": "str", "save": "4.34"},
    "dummy_legacy_added": {"model": "dummy", "legacy": True, "six": "added", "codes": "reduced", "bos": False,
                           "tokens": "exact", "save": "4.34"},
    "dummy_nonlegacy_special": {"model": "dummy", "legacy": False, "six": "special", "codes": "reduced",
                                "bos": True, "tokens": "exact", "save": "4.34"},
}  # fmt: skip
# reduced layout: the codes the golden prompts use and a few more; the others (<spch1027>, <img8191>
# and so on) are then plain text that sentencepiece splits
REDUCED_IMAGE = [*range(8), *range(96, 136)]
REDUCED_SPEECH = [*range(16), *range(870, 880)]

ENGLISH = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "speech", "image", "assistant",
    "user", "system", "hello", "world", "please", "transcribe", "generate", "MIO", "Yi", "tokenizer",
    "model", "text", "video", "Hello", "there", "again", "brief", "Be", "Hi", "a", "I", "you",
]  # fmt: skip
CJK = ["你好", "世界", "中文", "语音", "图片", "日本語", "こんにちは", "한국어", "龘", "。", "，", "的"]
EMOJI = ["😀", "🎉", "👍🏽", "🐍", "❤️", "🇨🇳"]
DIGITS = ["0", "7", "42", "2024", "3.14", "1,000", "8191", "4095"]
SPACES = [" ", " ", " ", "  ", "   ", "\n", "\n\n", " \n", "\n ", "\t", "\u3000"]
TOKENS = [
    "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", "<|reserved_4|>",
    *MIO_SIX, "<img0>", "<img5>", "<img131>", "<img8191>", "<spch0>", "<spch12>", "<spch873>",
    "<spch1027>", "<spch4095>",
]  # fmt: skip
PARTIAL = ["<", ">", "<spch", "<img", "<|im_", "</", "[", "]", "▁", "|>", "<spch12", "spch>"]


def _corpus(rng: random.Random) -> list[str]:
    from mio_agent.template import STD_SYSTEM, VOICE_SYSTEM

    lines = [STD_SYSTEM, VOICE_SYSTEM, "Please transcribe this speech.", "The transcription is"]
    invented = [
        "".join(rng.choice("abcdefghijklmnoprstuvwy") for _ in range(rng.randint(2, 9))) for _ in range(400)
    ]
    for _ in range(3000):
        n = rng.randint(3, 14)
        words = []
        for _ in range(n):
            kind = rng.random()
            if kind < 0.4:
                words.append(rng.choice(ENGLISH))
            elif kind < 0.6:
                words.append(rng.choice(invented))
            elif kind < 0.8:
                words.append(rng.choice(CJK))
            elif kind < 0.9:
                words.append(rng.choice(DIGITS))
            else:
                words.append(rng.choice(EMOJI))
        lines.append(rng.choice([" ", " ", "  "]).join(words))
    return lines


def _train(path: Path, lines: list[str], *, dummy: bool) -> None:
    import sentencepiece as spm

    normalization: dict[str, Any] = (
        # Llama-like, and with runs of spaces collapsed (sentencepiece's default)
        {"add_dummy_prefix": True, "normalization_rule_name": "identity", "remove_extra_whitespaces": True}
        if dummy
        # Yi: no dummy prefix, text kept as it is
        else {
            "add_dummy_prefix": False,
            "normalization_rule_name": "identity",
            "remove_extra_whitespaces": False,
        }
    )
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(path.with_suffix("")),
        vocab_size=VOCAB_SIZE,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=0.9995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece="<unk>",
        bos_piece="<|startoftext|>",
        eos_piece="<|endoftext|>",
        user_defined_symbols=YI_HEAD[3:],
        minloglevel=2,
        num_threads=1,
        **normalization,
    )
    path.with_suffix(".vocab").unlink()
    # the trainer spec records the temporary folder; keep the file the same from run to run
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    proto.trainer_spec.model_prefix = path.stem
    path.write_bytes(proto.SerializeToString())


def _prompts() -> list[str]:
    from mio_agent.conversation import (
        Conversation,
        ImagePart,
        SpeechPart,
        TextPart,
        Turn,
        conversation_from_json,
    )
    from mio_agent.template import GENERATION_PROMPT, TURN_SEPARATOR, prompt_segments, render_prompt

    img = list(range(100, 132))
    query = (
        "The transcription is ``Hello there''. Please generate a speech according to the given transcription. "
        "Start with <spch>."
    )
    mixed = conversation_from_json(
        {
            "mode": "voice",
            "turns": [
                {
                    "role": "user",
                    "content": [
                        {"text": "Please transcribe this speech.\n"},
                        {"speech": {"content": [12, 873]}},
                        {"image": {"codes": img}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [{"speech": {"content": [1, 2], "timbre": [[3, 4], [5, 6], [7, 8]]}}],
                },
                {"role": "user", "content": [{"text": "again"}]},
            ],
        }
    )
    cli = conversation_from_json(
        {
            "mode": "custom",
            "system": "Be brief.",
            "turns": [
                {"role": "user", "content": [{"text": "Hi "}, {"speech": {"content": [12, 873]}}]},
                {"role": "assistant", "content": [{"speech": {"content": [1], "timbre": [[3], [5], [7]]}}]},
            ],
        }
    )
    convs = [
        Conversation("voice", (Turn("user", (TextPart(query),)),)),
        Conversation("std", (Turn("user", (TextPart("Hi"),)), Turn("assistant", (TextPart("Hello!"),)))),
        Conversation("custom", (Turn("user", (TextPart("q"),)),), system="Be brief."),
        mixed,
        cli,
        Conversation(
            "std",
            (Turn("user", (TextPart("a"), ImagePart(tuple(img)))), Turn("assistant", (SpeechPart((5,)),))),
        ),
        Conversation("std", (Turn("user", (TextPart("  two  spaces\n\nand 中文 😀 2024 "),)),)),
        Conversation("std"),
    ]
    out: list[str] = [GENERATION_PROMPT, TURN_SEPARATOR]
    for conv in convs:
        for gen in (True, False):
            out.append(render_prompt(conv, generation_prompt=gen))
            out.extend(prompt_segments(conv, generation_prompt=gen))
    return list(dict.fromkeys(out))


def _random_strings(rng: random.Random, count: int) -> list[str]:
    out = []
    pools = [ENGLISH, CJK, EMOJI, DIGITS, SPACES, TOKENS, PARTIAL]
    weights = [5, 2, 1, 2, 4, 3, 1]
    for _ in range(count):
        parts = [rng.choice(rng.choices(pools, weights)[0]) for _ in range(rng.randint(1, 14))]
        out.append("".join(parts))
    return out


def stage_build(work: Path) -> dict[str, Any]:
    """Train the sentencepiece models and collect the strings (project venv)."""
    rng = random.Random(20240611)
    lines = _corpus(rng)
    models = {}
    for name, dummy in (("yi", False), ("dummy", True)):
        path = work / f"{name}.model"
        _train(path, lines, dummy=dummy)
        models[name] = str(path)
    prompts = _prompts()
    randoms = _random_strings(rng, 200)
    return {"models": models, "prompts": prompts, "random": randoms}


def _code_tokens(codes: str) -> list[str]:
    img, spch = (range(8192), range(4096)) if codes == "full" else (REDUCED_IMAGE, REDUCED_SPEECH)
    return [f"<img{c}>" for c in img] + [f"<spch{c}>" for c in spch]


def stage_reference(plan: dict[str, Any], out: Path) -> None:
    """Build, save, reload and run every variant with transformers 4.34's slow LlamaTokenizer."""
    import transformers
    from transformers import AddedToken, LlamaTokenizer

    assert transformers.__version__ == "4.34.0", transformers.__version__
    strings = plan["prompts"] + plan["random"]
    for name, v in VARIANTS.items():
        tok = LlamaTokenizer(
            vocab_file=plan["models"][v["model"]],
            unk_token="<unk>",
            bos_token="<|startoftext|>",
            eos_token="<|endoftext|>",
            pad_token="<unk>",
            add_bos_token=v["bos"],
            add_eos_token=False,
            legacy=v["legacy"],
            clean_up_tokenization_spaces=False,
            model_max_length=4096,
        )

        def given(tokens: list[str], special: bool, exact: bool = v["tokens"] == "exact") -> list[Any]:
            if not exact:
                return tokens  # 4.34 turns strings into AddedToken(lstrip=True, rstrip=True)
            return [
                AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=special) for t in tokens
            ]

        if v["six"] == "special":
            tok.add_tokens(given(MIO_SIX, True), special_tokens=True)
        else:
            tok.add_tokens(given(MIO_SIX, False))
        tok.add_tokens(given(_code_tokens(v["codes"]), False))
        folder = out / name
        if folder.exists():
            shutil.rmtree(folder)
        tok.save_pretrained(str(folder))
        if v["save"] == "old":
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
            config.pop("added_tokens_decoder", None)
            config.pop("additional_special_tokens", None)
            (folder / "tokenizer_config.json").write_text(
                json.dumps(config, indent=2) + "\n", encoding="utf-8"
            )
        ref = LlamaTokenizer.from_pretrained(str(folder))
        assert ref.convert_tokens_to_ids("<spch>") == len(ref.sp_model) + 3, name
        golden = {
            "variant": v,
            "transformers": transformers.__version__,
            "len": len(ref),
            "ids": [ref(s)["input_ids"] for s in strings],
            "ids_no_special": [ref.encode(s, add_special_tokens=False) for s in strings],
        }
        (folder / "golden_ids.json").write_text(
            json.dumps(golden, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    n_prompts = len(plan["prompts"])
    (out / "strings.json").write_text(
        json.dumps(
            {"prompts": strings[:n_prompts], "random": strings[n_prompts:]}, ensure_ascii=False, indent=0
        )
        + "\n",
        encoding="utf-8",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference-python", help="python of the venv with transformers==4.34.0")
    parser.add_argument("--stage", choices=["all", "reference"], default="all")
    parser.add_argument("--plan", help="(internal) the plan written by stage 1")
    parser.add_argument("--out", default=str(DATA))
    args = parser.parse_args()
    out = Path(args.out)
    if args.stage == "reference":
        stage_reference(json.loads(Path(args.plan).read_text(encoding="utf-8")), out)
        return
    if not args.reference_python:
        parser.error("--reference-python is required (see the docstring)")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        plan = stage_build(Path(tmp))
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan, ensure_ascii=False), encoding="utf-8")
        cmd = [
            args.reference_python,
            __file__,
            "--stage",
            "reference",
            "--plan",
            str(plan_file),
            "--out",
            str(out),
        ]
        subprocess.run(cmd, check=True, cwd=tempfile.gettempdir())
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
