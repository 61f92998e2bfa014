#!/usr/bin/env python3
"""What a soft prompt made of document tokens can give the frozen LM.

Teacher-forced answer NLL (nats per answer token) of SmolLM2-135M-Instruct
(the pinned GGUF, through `transformers`) on questions of an evaluation's
predictions.jsonl, with the prompt mac-rs uses ("Question: ...\\nAnswer:")
and, in front of it as input embeddings:
  none          nothing
  exact         the LM's own embeddings of the answer's tokens, in order
  other         the embeddings of another question's answer
  mean_of_exact the mean of the answer's embeddings, repeated 6 times
The gap between `exact` and `mean_of_exact` is why copy mode attends hard.

Usage: MAC_PYTHON=~/.cache/mac-rs/torch-venv/bin/python
       $MAC_PYTHON scripts/soft-prompt-ceiling.py RUN/eval/predictions.jsonl [N]
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL_DIR = os.path.expanduser("~/.cache/mac-rs/models/smollm2-135m-instruct")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main():
    path = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=GGUF)
    model.eval()
    rows = [json.loads(line) for line in open(path)]
    first_method = rows[0]["method"]
    rows = [r for r in rows if r["method"] == first_method][:n]
    table = model.get_input_embeddings().weight.detach()

    def ids(text):
        return tok(text, add_special_tokens=False).input_ids

    def nll(prefix, question, answer):
        prompt, target = ids(f"Question: {question}\nAnswer:"), ids(" " + answer)
        emb = table[torch.tensor([prompt + target])]
        offset = 0
        if prefix is not None:
            emb = torch.cat([prefix[None], emb], 1)
            offset = prefix.shape[0]
        with torch.no_grad():
            logp = torch.log_softmax(model(inputs_embeds=emb).logits[0], -1)
        start = offset + len(prompt) - 1
        return -sum(logp[start + i, t].item() for i, t in enumerate(target)) / len(target)

    results = {"none": [], "exact": [], "other": [], "mean_of_exact": []}
    for i, r in enumerate(rows):
        q, a = r["question"], r["answers"][0]
        other = rows[(i + 7) % len(rows)]["answers"][0]
        exact = table[ids(" " + a)]
        results["none"].append(nll(None, q, a))
        results["exact"].append(nll(exact, q, a))
        results["other"].append(nll(table[ids(" " + other)], q, a))
        results["mean_of_exact"].append(nll(exact.mean(0, keepdim=True).expand(6, -1), q, a))
    print(f"{len(rows)} questions of {path} ({first_method}); answer NLL, nats per token:")
    for name, values in results.items():
        print(f"  {name:14s} {sum(values) / len(values):.3f}")


if __name__ == "__main__":
    main()
