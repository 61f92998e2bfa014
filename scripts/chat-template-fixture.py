#!/usr/bin/env python3
"""Renders SmolLM2-135M-Instruct's chat template with Jinja2 (as
`transformers`' apply_chat_template does) for a few conversations, so that
mac-model's own ChatML rendering is checked against the template itself.

The template is read from the pinned GGUF's `tokenizer.chat_template`.

Usage: MAC_PYTHON=~/.cache/mac-rs/torch-venv/bin/python
       $MAC_PYTHON scripts/chat-template-fixture.py \
           ~/.cache/mac-rs/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
           > crates/mac-model/tests/fixtures/chat_template.json
"""
import json
import struct
import sys

import jinja2

KEY = b"tokenizer.chat_template"


def chat_template(path):
    # The key is followed by the value type (8: string), its length and bytes.
    head = open(path, "rb").read(8 << 20)
    at = head.find(KEY)
    if at < 0:
        sys.exit(f"{path}: no {KEY.decode()}")
    at += len(KEY)
    kind, = struct.unpack_from("<I", head, at)
    if kind != 8:
        sys.exit(f"{path}: {KEY.decode()} is not a string (type {kind})")
    n, = struct.unpack_from("<Q", head, at + 4)
    return head[at + 12: at + 12 + n].decode("utf-8")


def main():
    template = chat_template(sys.argv[1])
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    compiled = env.from_string(template)
    conversations = [
        [{"role": "user", "content": "Where was Ada born?"}],
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Text: Ada was born in Elmford.\nQuestion: Where was Ada born?"},
        ],
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2 with\ttabs and \"quotes\""},
        ],
        [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "second"},
        ],
    ]
    cases = [
        {"messages": m, "rendered": compiled.render(messages=m, add_generation_prompt=True)}
        for m in conversations
    ]
    json.dump({"template": template, "cases": cases}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
