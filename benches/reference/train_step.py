"""PyTorch reference for benches/benches/train_step.rs: one MAC meta-training
step of the default preset, on its shapes.

8 fact documents (the same generator's style, ~40 tokens) through
all-MiniLM-L6-v2 (top 2 layers trainable) plus the LM-token channel (the
frozen SmolLM2's residual stream after 12 of its 30 layers, no graph,
projected 576 -> 384 and normed, read beside MiniLM's states) + 12 learned
queries + per-token MLPs (384 -> 384); 3 questions per document (24) through
a second MiniLM + head; 4 pre-LN cross-attention blocks (6 heads x 64), each
question over its own document's 12 tokens (the preset trains every step in
this own-document mode), output without the question residual; a shared
expansion MLP (384 -> 768 -> 192) with 120 slot embeddings giving 2 prefix
slots per layer for SmolLM2-135M (30 layers, 3 KV heads x 64, frozen, fp32
from the GGUF); answer NLL + the auxiliary answer-token loss (mean aggregated
token -> 576 -> the LM's output embedding, bag of answer tokens); backward;
Adam.

With --profile, each part of the step is timed (the same parts as
mac_train's step profile; wall clock, PyTorch runs eagerly on the CPU) and
the medians are printed instead.

The LM is a GGUF file or a Hugging Face directory (scripts/device-check.sh
passes random-weight models of the same shapes); --device cuda runs the step
on the GPU (timers synchronise it).

Usage: python train_step.py LM MINILM_DIR [--threads N] [--reps R] [--profile] [--device cpu|cuda]
"""
import argparse, json, os, statistics, time

import torch
from torch import nn
from transformers import AutoTokenizer, BertModel
from transformers.cache_utils import DynamicCache

from load_lm import load_lm, synchronizer

ap = argparse.ArgumentParser()
ap.add_argument("lm", help="a GGUF file or a Hugging Face model directory")
ap.add_argument("minilm")
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--reps", type=int, default=10)
ap.add_argument("--questions-per-document", type=int, default=3)
ap.add_argument("--profile", action="store_true")
ap.add_argument("--device", default="cpu")
a = ap.parse_args()
dev = torch.device(a.device)
sync = synchronizer(dev)

torch.set_num_threads(a.threads)
torch.manual_seed(0)
N, D, P = 12, 384, 2
CHANNEL_LAYERS = 12

tok, lm = load_lm(a.lm, dev)
tok.pad_token = tok.pad_token or tok.eos_token
tok.padding_side = "right"
for p in lm.parameters():
    p.requires_grad_(False)
L, HKV, DH = lm.config.num_hidden_layers, lm.config.num_key_value_heads, lm.config.hidden_size // lm.config.num_attention_heads
btok = AutoTokenizer.from_pretrained(a.minilm)


def encoder():
    m = BertModel.from_pretrained(a.minilm)
    for n, p in m.named_parameters():
        p.requires_grad_(any(f"layer.{i}." in n for i in (4, 5)))
    return m


class QueryHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Parameter(torch.randn(N, 384) * 0.02)
        self.att = nn.MultiheadAttention(384, 6, bias=False, batch_first=True)
        self.norm = nn.LayerNorm(384)
        self.w1 = nn.Parameter(torch.randn(N, 384, D) / 384**0.5)
        self.b1 = nn.Parameter(torch.zeros(N, D))
        self.w2 = nn.Parameter(torch.randn(N, D, D) / D**0.5)
        self.b2 = nn.Parameter(torch.zeros(N, D))

    def forward(self, states, pad):
        q = self.q.unsqueeze(0).expand(states.shape[0], -1, -1)
        x, _ = self.att(q, states, states, key_padding_mask=pad, need_weights=False)
        y = torch.tanh(torch.einsum("bnh,nhd->bnd", self.norm(x), self.w1) + self.b1)
        return torch.einsum("bnd,nde->bne", y, self.w2) + self.b2 + x


class Timer:
    """Adds the wall-clock time of each call to its part (off: just calls)."""

    def __init__(self, on=False):
        self.on, self.parts = on, {}

    def __call__(self, name, f):
        if not self.on:
            return f()
        sync()
        t = time.perf_counter()
        out = f()
        sync()
        self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - t
        return out


timer = Timer()


class _Stop(Exception):
    pass


@torch.no_grad()
def residual_stream(batch, layers):
    """The frozen LM's hidden states after its first `layers` layers (the
    forward stops there)."""
    got = {}

    def hook(_module, _inputs, out):
        got["h"] = out[0] if isinstance(out, tuple) else out
        raise _Stop

    handle = lm.model.layers[layers - 1].register_forward_hook(hook)
    try:
        lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    except _Stop:
        pass
    finally:
        handle.remove()
    return got["h"]


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.nq, self.nkv, self.nf = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(D, D, bias=False) for _ in range(4))
        self.ff = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))

    def forward(self, x, mem):
        b, n, _ = x.shape
        k_len = mem.shape[1]
        split = lambda z, l: z.view(b, l, 6, 64).transpose(1, 2)
        m = self.nkv(mem)
        q, k, v = split(self.wq(self.nq(x)), n), split(self.wk(m), k_len), split(self.wv(m), k_len)
        att = torch.softmax(q @ k.transpose(2, 3) / 8.0, -1)
        x = x + self.wo((att @ v).transpose(1, 2).reshape(b, n, D))
        return x + self.ff(self.nf(x))


class Mac(nn.Module):
    def __init__(self):
        super().__init__()
        self.doc_enc, self.q_enc = encoder(), encoder()
        self.doc_head, self.q_head = QueryHead(), QueryHead()
        self.blocks = nn.ModuleList([Block() for _ in range(4)])
        self.norm = nn.LayerNorm(D)
        slots = 2 * L * P
        self.slot = nn.Parameter(torch.zeros(slots, D))
        self.exp_norm = nn.LayerNorm(D)
        self.exp = nn.Sequential(nn.Linear(D, 768), nn.GELU(), nn.Linear(768, HKV * DH))
        self.skip = nn.Linear(D, HKV * DH, bias=False)
        self.probe = nn.Linear(D, lm.config.hidden_size, bias=False)
        self.channel = nn.Linear(lm.config.hidden_size, 384)
        self.channel_norm = nn.LayerNorm(384)

    def encode_documents(self, docs):
        dt = btok(docs, padding=True, truncation=True, max_length=256, return_tensors="pt").to(dev)
        lt = tok(docs, padding=True, truncation=True, max_length=256, return_tensors="pt").to(dev)
        stream = timer("of which: LM-token channel", lambda: residual_stream(lt, CHANNEL_LAYERS))
        lm_states = self.channel_norm(self.channel(stream))
        states = torch.cat([self.doc_enc(**dt).last_hidden_state, lm_states], 1)
        pad = torch.cat([dt["attention_mask"], lt["attention_mask"]], 1) == 0
        return self.doc_head(states, pad)  # [8, N, D]

    def encode_questions(self, questions):
        qt = btok(questions, padding=True, truncation=True, max_length=64, return_tensors="pt").to(dev)
        return self.q_head(self.q_enc(**qt).last_hidden_state, qt["attention_mask"] == 0)

    def prefix(self, docs, questions, doc_of_question):
        bank = timer("document encoder", lambda: self.encode_documents(docs))
        x = timer("question encoder", lambda: self.encode_questions(questions))
        return timer("aggregation + expansion", lambda: self.aggregate(bank, x, doc_of_question))

    def aggregate(self, bank, x, doc_of_question):
        b = x.shape[0]
        mem = bank[doc_of_question]  # [b, N, D]: each question's own document
        x0 = x
        for blk in self.blocks:
            x = blk(x, mem)
        x = self.norm(x - x0)  # [b, N, D]: what was read from memory
        self.probe_hidden = self.probe(x.mean(1))
        tokens = x.mean(1, keepdim=True) + self.slot.unsqueeze(0)  # [b, slots, D]: one input per slot
        kv = self.exp(self.exp_norm(tokens)) + self.skip(tokens)
        kv = kv.view(b, 2, L, P, HKV, DH).permute(1, 2, 0, 4, 3, 5)  # [2, L, b, HKV, P, DH]
        cache = DynamicCache()
        for l in range(L):
            cache.update(kv[0, l], kv[1, l], l)
        return cache


docs = [f"Person{i} Quellington was born in Port Vessa on {i + 3} March 1961. Person{i} Quellington works for Orvane Dynamics. Person{i} Quellington won the Ember Prize." for i in range(8)]
Q = 8 * a.questions_per_document
qs = [f"Where was Person{i % 8} Quellington born?" for i in range(Q)]
doc_of_question = torch.tensor([i % 8 for i in range(Q)])
answers = ["Port Vessa"] * Q
seqs, starts = [], []
for q, ans in zip(qs, answers):
    p = tok.encode(f"Question: {q}\nAnswer:", add_special_tokens=False)
    t = tok.encode(" " + ans, add_special_tokens=False) + [tok.eos_token_id]
    seqs.append(p + t)
    starts.append(len(p))
T = max(map(len, seqs))
ids = torch.tensor([s + [0] * (T - len(s)) for s in seqs])
valid = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs])
labels = ids.clone()
for r, (s, st) in enumerate(zip(seqs, starts)):
    labels[r, :st] = -100
    labels[r, len(s):] = -100
attn = torch.cat([torch.ones(Q, P), valid], 1)  # the P prefix slots are visible
pos = torch.arange(T).unsqueeze(0).expand(Q, -1)
bag = torch.zeros(Q, lm.config.vocab_size)
for r, ans in enumerate(answers):
    t = tok.encode(" " + ans, add_special_tokens=False)
    for i in t:
        bag[r, i] += 1.0 / len(t)

ids, valid, labels, attn, pos, bag, doc_of_question = (
    t.to(dev) for t in (ids, valid, labels, attn, pos, bag, doc_of_question))
model = Mac().to(dev)
opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-4)


def step():
    opt.zero_grad()
    cache = model.prefix(docs, qs, doc_of_question)
    out = timer("LM forward (answer NLL)", lambda: lm(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache, labels=labels))
    aux = timer("auxiliary losses", lambda: -(torch.log_softmax(lm.lm_head(model.probe_hidden), -1) * bag).sum() / Q)
    timer("backward", lambda: (out.loss + aux).backward())

    def update():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    timer("optimizer", update)
    return out.loss.item()


def lm_backward_alone():
    """The frozen LM's backward pass to a leaf prefix of the step's shape."""
    leaf = lambda: (torch.randn(Q, HKV, P, DH, device=dev) * 0.02).requires_grad_()
    cache = DynamicCache()
    for l in range(L):
        cache.update(leaf(), leaf(), l)
    out = lm(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache, labels=labels)
    sync()
    t = time.perf_counter()
    out.loss.backward()
    sync()
    return time.perf_counter() - t


PARTS = ["document encoder", "of which: LM-token channel", "question encoder", "aggregation + expansion",
         "LM forward (answer NLL)", "auxiliary losses", "backward", "of which: LM backward", "optimizer", "other"]

step()
times, profiles = [], []
for _ in range(a.reps):
    timer.on, timer.parts = a.profile, {}
    sync()
    t = time.perf_counter(); step(); sync(); times.append(time.perf_counter() - t)
    if a.profile:
        parts = dict(timer.parts)
        parts["of which: LM backward"] = lm_backward_alone()
        top = [p for p in PARTS if not p.startswith("of which") and p != "other"]
        parts["other"] = max(0.0, times[-1] - sum(parts.get(p, 0.0) for p in top))
        profiles.append(parts)
result = {"torch": torch.__version__, "threads": a.threads, "device": a.device, "train_step_s": statistics.median(times)}
if a.profile:
    result["total"] = result["train_step_s"]
    result["parts"] = [{"name": p, "seconds": statistics.median(q.get(p, 0.0) for q in profiles)} for p in PARTS]
print(json.dumps(result))
