"""`mio-agent prompt`: print the exact MIO prompt (text or ids) of a conversation file."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mio_agent.cli.common import add_config_argument, config_from_args, model_dir
from mio_agent.conversation import load_conversation
from mio_agent.template import prompt_ids, render_prompt

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "prompt",
        help="print the exact MIO prompt of a conversation file",
        description="Print the exact prompt MIO reads for a conversation JSON file "
        "(see README: conversation files).",
    )
    p.add_argument("file", metavar="FILE.json", help="conversation file")
    p.add_argument(
        "--no-generation-prompt",
        action="store_true",
        help="do not end with '<|im_start|>assistant\\n'",
    )
    p.add_argument(
        "--ids", action="store_true", help="print token ids (JSON list) with the configured tokenizer"
    )
    add_config_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    conv = load_conversation(args.file)
    gen = not args.no_generation_prompt
    if not args.ids:
        sys.stdout.write(render_prompt(conv, generation_prompt=gen))
        sys.stdout.flush()
        return 0
    from mio_agent.model.loading import load_tokenizer

    path, _ = model_dir(config_from_args(args))
    tokenizer = load_tokenizer(path)
    print(json.dumps(prompt_ids(conv, tokenizer, generation_prompt=gen)))
    return 0
