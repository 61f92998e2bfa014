#!/usr/bin/env python3
"""What the frozen LM's own key/values of a few document tokens can carry.

A modulation made of per-layer prefix key/values could hold, for a handful
of a document's tokens, exactly the keys and values the frozen LM computes
for them when it reads the whole document. This measures how much of a
fact survives that, for SmolLM2-135M-Instruct (the pinned GGUF, through
`transformers`) on the first documents of a test split, with the prompt
mac-rs uses ("Question: ...\\nAnswer:", positions continuing after the
document):

  none              no prefix
  full_doc          the whole document's key/values (the document in context)
  span+first1       only the answer span's key/values and the first token's
                    (an attention sink) -- an oracle selection that knows the answer
  span+first4       the same with the first four tokens
  surprisal16+first1  the 16 tokens the LM predicted worst, chosen without the question
  attention8+first1   the 8 tokens the question's last token attends to most
                    (layers 8-23, over the whole document; punctuation excluded)

Reported: teacher-forced answer NLL (nats per token) and the F1 of greedy
answers (first line, at most 12 tokens) against the gold answer.

Usage: MAC_PYTHON=~/.cache/mac-rs/torch-venv/bin/python
       $MAC_PYTHON scripts/kv-memory-ceiling.py SPLIT.json [N_DOCUMENTS]
SPLIT.json is a serialised mac_data::Dataset ({"documents": [{"text", "qas"}]}).
"""
import collections
import json
import os
import re
import string
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

MODEL_DIR = os.path.expanduser("~/.cache/mac-rs/models/smollm2-135m-instruct")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=GGUF)
model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=GGUF, attn_implementation="eager")
model.eval()


def ids(text):
    return tok(text, add_special_tokens=False).input_ids


def normalize(s):
    s = "".join(c for c in s.lower() if c not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


def f1(prediction, gold):
    p, g = normalize(prediction).split(), normalize(gold).split()
    common = sum((collections.Counter(p) & collections.Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def subset(cache, idx):
    kept = DynamicCache()
    idx = torch.tensor(idx, dtype=torch.long)
    for i, layer in enumerate(cache.layers):
        kept.update(layer.keys[:, :, idx].clone(), layer.values[:, :, idx].clone(), i)
    return kept


@torch.no_grad()
def run(x, cache, n_prefix, pos0, **kw):
    pos = torch.arange(pos0, pos0 + x.shape[1])[None]
    mask = torch.ones(1, n_prefix + x.shape[1], dtype=torch.long)
    return model(input_ids=x, position_ids=pos, attention_mask=mask, past_key_values=cache, use_cache=True, **kw)


def answer_nll(cache, n_prefix, pos0, question, answer):
    prompt, target = ids(f"Question: {question}\nAnswer:"), ids(" " + answer)
    logp = torch.log_softmax(run(torch.tensor([prompt + target]), cache, n_prefix, pos0).logits[0], -1)
    start = len(prompt) - 1
    return -sum(logp[start + i, t].item() for i, t in enumerate(target)) / len(target)


def greedy(cache, n_prefix, pos0, question, max_new=12):
    x, out_ids = torch.tensor([ids(f"Question: {question}\nAnswer:")]), []
    for _ in range(max_new):
        out = run(x, cache, n_prefix, pos0)
        cache, n_prefix, pos0 = out.past_key_values, n_prefix + x.shape[1], pos0 + x.shape[1]
        t = out.logits[0, -1].argmax().item()
        if t == tok.eos_token_id:
            break
        out_ids.append(t)
        if "\n" in tok.decode(out_ids):
            break
        x = torch.tensor([[t]])
    return tok.decode(out_ids).split("\n")[0].strip()


def answer_span(doc_ids, answer):
    for text in (" " + answer, answer):
        a = ids(text)
        for s in range(len(doc_ids) - len(a) + 1):
            if doc_ids[s : s + len(a)] == a:
                return list(range(s, s + len(a)))
    return None


@torch.no_grad()
def surprisal(doc_ids):
    logp = torch.log_softmax(model(input_ids=torch.tensor([doc_ids])).logits[0], -1)
    return [float("inf")] + [-logp[i - 1, doc_ids[i]].item() for i in range(1, len(doc_ids))]


def attention_scores(full, doc_ids, question, layers=range(8, 24)):
    n = len(doc_ids)
    prompt = torch.tensor([ids(f"Question: {question}\nAnswer:")])
    out = run(prompt, subset(full, list(range(n))), n, n, output_attentions=True)
    a = torch.stack([out.attentions[layer][0, :, -1, :n] for layer in layers])
    scores = (a / a.sum(-1, keepdim=True)).mean((0, 1)).tolist()
    for i, t in enumerate(doc_ids):
        if i == 0 or tok.decode([t]).strip() in (".", ",", ""):
            scores[i] = 0.0
    return scores


def top(scores, k):
    return sorted(sorted(range(len(scores)), key=lambda i: -scores[i])[:k])


def main():
    docs = json.load(open(sys.argv[1]))["documents"][: int(sys.argv[2]) if len(sys.argv) > 2 else 20]
    nll, f1s = collections.defaultdict(list), collections.defaultdict(list)
    for d in docs:
        doc_ids = ids(d["text"] + "\n")
        n = len(doc_ids)
        with torch.no_grad():
            full = model(input_ids=torch.tensor([doc_ids]), use_cache=True).past_key_values
        surprise = surprisal(doc_ids)
        for qa in d["qas"]:
            q, a = qa["question"], qa["answers"][0]
            span = answer_span(doc_ids, a)
            if span is None:
                continue
            kept = {
                "none": None,
                "full_doc": list(range(n)),
                "span+first1": sorted({0, *span}),
                "span+first4": sorted({0, 1, 2, 3, *span}),
                "surprisal16+first1": sorted({0, *top(surprise, 16)}),
                "attention8+first1": sorted({0, *top(attention_scores(full, doc_ids, q), 8)}),
            }
            for name, idx in kept.items():
                prefix = (lambda: None) if idx is None else (lambda idx=idx: subset(full, idx))
                k = 0 if idx is None else len(idx)
                pos0 = 0 if idx is None else n
                nll[name].append(answer_nll(prefix(), k, pos0, q, a))
                f1s[name].append(f1(greedy(prefix(), k, pos0, q), a))
    count = len(nll["none"])
    print(f"{count} questions of the first {len(docs)} documents of {sys.argv[1]}")
    print(f"{'prefix':22s} {'answer NLL':>10s} {'F1':>6s}")
    for name in nll:
        print(f"{name:22s} {sum(nll[name]) / count:10.3f} {sum(f1s[name]) / count:6.3f}")


if __name__ == "__main__":
    main()
