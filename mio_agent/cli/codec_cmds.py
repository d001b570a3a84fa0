"""`mio-agent tokenize` / `detokenize`: what the model sees of a sound, a picture or a video, and back."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mio_agent.cli.common import add_config_argument, config_from_args
from mio_agent.exceptions import CodecError
from mio_agent.files import atomic_output

__all__ = ["register_detokenize", "register_tokenize"]


def _dir_flags(
    p: argparse.ArgumentParser, *, speech: bool = False, image: bool = False, diffusion: bool = False
) -> None:
    if speech:
        p.add_argument(
            "--speech-tokenizer", metavar="DIR", help="folder with config.json + SpeechTokenizer.pt"
        )
    if image:
        p.add_argument(
            "--image-tokenizer", metavar="DIR", help="folder with seed_quantizer.pt + eva_vit_g.pth"
        )
    if diffusion:
        p.add_argument(
            "--diffusion", metavar="DIR", help="stable-diffusion-2-1-unclip folder (diffusers format)"
        )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    add_config_argument(p)


def register_tokenize(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "tokenize", help="print the MIO codes of a speech file, an image or a video's keyframes"
    )
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    s = kinds.add_parser("speech", help="speech file (WAV) -> content [and timbre] codes")
    s.add_argument("file", metavar="FILE")
    s.add_argument(
        "--timbre", action="store_true", help="also the three timbre layers (assistant-style speech)"
    )
    s.add_argument("--json", action="store_true", help="one JSON object only")
    _dir_flags(s, speech=True)
    i = kinds.add_parser("image", help="image file -> 32 codes")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--json", action="store_true", help="one JSON object only")
    _dir_flags(i, image=True)
    v = kinds.add_parser("video", help="video file -> 32 codes per keyframe, with timestamps")
    v.add_argument("file", metavar="FILE")
    v.add_argument("--max-frames", type=int, default=10, help="at most this many keyframes (default 10)")
    v.add_argument("--json", action="store_true", help="one JSON object only")
    _dir_flags(v, image=True)
    p.set_defaults(func=_tokenize)


def register_detokenize(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "detokenize", help="turn MIO codes back into a WAV or an image"
    )
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    s = kinds.add_parser("speech", help='{"content": [...], "timbre": [[...],[...],[...]]} -> WAV (16 kHz)')
    s.add_argument("codes", metavar="CODES.json")
    s.add_argument("-o", "--output", required=True, metavar="OUT.wav")
    _dir_flags(s, speech=True)
    i = kinds.add_parser("image", help='{"codes": [32 codes]} -> image (768x768 with the real decoder)')
    i.add_argument("codes", metavar="CODES.json")
    i.add_argument("-o", "--output", required=True, metavar="OUT.png")
    i.add_argument("--steps", type=int, help="denoising steps (default codecs.diffusion_steps, 20)")
    i.add_argument("--seed", type=int, default=0, help="seed of the initial latent (default 0)")
    _dir_flags(i, image=True, diffusion=True)
    p.set_defaults(func=_detokenize)


def _speech_dir(args: argparse.Namespace) -> Path:
    if args.speech_tokenizer:
        return Path(args.speech_tokenizer)
    from mio_agent.codecs.folders import speech_tokenizer_dir

    return speech_tokenizer_dir(config_from_args(args))


def _image_dir(args: argparse.Namespace) -> Path:
    if args.image_tokenizer:
        return Path(args.image_tokenizer)
    from mio_agent.codecs.folders import image_tokenizer_dir

    return image_tokenizer_dir(config_from_args(args))


def _emit(args: argparse.Namespace, obj: Mapping[str, Any], summary: str) -> None:
    if not args.json:
        print(summary, file=sys.stderr)
    print(json.dumps(obj))


def _tokenize_speech(args: argparse.Namespace) -> None:
    from mio_agent.codecs.speech import SpeechCodec, load_audio

    audio, rate = load_audio(args.file)
    codec = SpeechCodec.from_pretrained(_speech_dir(args), device=args.device)
    codes = codec.encode(audio, rate, timbre=args.timbre)
    obj: dict[str, Any] = {"content": list(codes.content)}
    if codes.timbre is not None:
        obj["timbre"] = [list(layer) for layer in codes.timbre]
    _emit(args, obj, f"{args.file}: {codes.frames} frames ({codes.frames / 50:.2f} s at 50 codes/s)")


def _tokenize_image(args: argparse.Namespace) -> None:
    from mio_agent.codecs.image import ImageCodec, load_image

    image = load_image(args.file)
    codec = ImageCodec.from_pretrained(_image_dir(args), device=args.device)
    _emit(args, {"codes": codec.encode(image)}, f"{args.file}: {image.width}x{image.height} -> 32 codes")


def _tokenize_video(args: argparse.Namespace) -> None:
    from mio_agent.codecs.image import ImageCodec
    from mio_agent.codecs.video import keyframes_from_file

    frames = keyframes_from_file(args.file, max_frames=args.max_frames)
    codec = ImageCodec.from_pretrained(_image_dir(args), device=args.device)
    codes = codec.encode_many([k.image for k in frames])
    keyframes = [
        {"index": k.index, "time_s": round(k.time_s, 3), "codes": c}
        for k, c in zip(frames, codes, strict=True)
    ]
    _emit(args, {"keyframes": keyframes}, f"{args.file}: {len(frames)} keyframes")


def _tokenize(args: argparse.Namespace) -> int:
    {"speech": _tokenize_speech, "image": _tokenize_image, "video": _tokenize_video}[args.kind](args)
    return 0


def _read_codes(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CodecError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"{path}: not a JSON file ({exc})") from None
    # a conversation item ({"speech": {...}} / {"image": {...}}) is accepted as well as its body
    if isinstance(data, dict) and len(data) == 1 and next(iter(data)) in ("speech", "image"):
        data = next(iter(data.values()))
    if not isinstance(data, dict):
        raise CodecError(f"{path}: expected a JSON object of codes")
    return data


def _detokenize_speech(args: argparse.Namespace, data: dict[str, Any]) -> None:
    from mio_agent.codecs.speech import SpeechCodec, write_wav

    if "content" not in data:
        raise CodecError(f'{args.codes}: no "content" list of speech codes')
    codec = SpeechCodec.from_pretrained(_speech_dir(args), device=args.device)
    audio = codec.decode(data["content"], data.get("timbre"))
    write_wav(args.output, audio, codec.sample_rate)
    print(f"{args.output}: {len(audio) / codec.sample_rate:.2f} s at {codec.sample_rate} Hz", file=sys.stderr)


def _detokenize_image(args: argparse.Namespace, data: dict[str, Any]) -> None:
    from mio_agent.codecs.image import ImageCodec

    if "codes" not in data:
        raise CodecError(f'{args.codes}: no "codes" list of 32 image codes')
    cfg = config_from_args(args)
    if args.diffusion:
        diffusion = Path(args.diffusion)
    else:
        from mio_agent.codecs.folders import diffusion_dir

        diffusion = diffusion_dir(cfg)
    codec = ImageCodec.from_pretrained(_image_dir(args), diffusion_dir=diffusion, device=args.device)
    steps = args.steps if args.steps is not None else cfg.codecs.diffusion_steps

    def progress(done: int, total: int) -> None:
        print(f"\rdenoising {done}/{total}", end="", file=sys.stderr, flush=True)

    image = codec.decode(data["codes"], steps=steps, seed=args.seed, progress=progress)
    print(file=sys.stderr)
    out = Path(args.output)
    if not out.parent.is_dir():
        raise CodecError(f"{out.parent}: no such folder for the output file")
    try:
        with atomic_output(out) as tmp:
            image.save(tmp, format=None if out.suffix else "PNG")
    except (OSError, ValueError) as exc:
        raise CodecError(f"{out}: cannot write the image ({exc}); use a .png or .jpg name") from None
    print(f"{out}: {image.width}x{image.height}", file=sys.stderr)


def _detokenize(args: argparse.Namespace) -> int:
    data = _read_codes(args.codes)
    if args.kind == "speech":
        _detokenize_speech(args, data)
    else:
        _detokenize_image(args, data)
    return 0
