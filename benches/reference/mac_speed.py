"""PyTorch reference for benches/benches/mac.rs on the same shapes.

* ingest: all-MiniLM-L6-v2 (transformers BertModel, the fetched weights) on
  8 documents of 256 tokens, then 12 learned queries cross-attending to its
  output (6 heads) and one MLP per token (LayerNorm -> Linear -> tanh ->
  Linear, 384 -> 384), as mac-model's AmortizationEncoder;
* aggregate: one question (12 tokens x 384) over N*12 memory tokens through 4
  pre-LayerNorm cross-attention blocks (6 heads x 64, GELU feed-forward 4x),
  flat, N = 100, 200, 1k, 10k.

Prints one JSON line with median seconds. Usage:
  python mac_speed.py MINILM_DIR [--threads N] [--reps R]
"""
import argparse, json, os, statistics, time

import torch
from torch import nn
from transformers import BertModel

ap = argparse.ArgumentParser()
ap.add_argument("minilm")
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--reps", type=int, default=10)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
N_TOK, D = 12, 384


class QueryHead(nn.Module):
    def __init__(self, h, n, d, heads):
        super().__init__()
        self.q = nn.Parameter(torch.randn(n, h) * 0.02)
        self.att = nn.MultiheadAttention(h, heads, bias=False, batch_first=True)
        self.norm = nn.LayerNorm(h)
        self.w1 = nn.Parameter(torch.randn(n, h, d) / h**0.5)
        self.w2 = nn.Parameter(torch.randn(n, d, d) / d**0.5)

    def forward(self, states, pad_mask):
        q = self.q.unsqueeze(0).expand(states.shape[0], -1, -1)
        x, _ = self.att(q, states, states, key_padding_mask=pad_mask, need_weights=False)
        y = torch.tanh(torch.einsum("bnh,nhd->bnd", self.norm(x), self.w1))
        return torch.einsum("bnd,nde->bne", y, self.w2) + x


class Block(nn.Module):
    def __init__(self, d, heads, dh):
        super().__init__()
        self.nq, self.nkv, self.nf = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.heads, self.dh = heads, dh
        self.wq = nn.Linear(d, heads * dh, bias=False)
        self.wk = nn.Linear(d, heads * dh, bias=False)
        self.wv = nn.Linear(d, heads * dh, bias=False)
        self.wo = nn.Linear(heads * dh, d, bias=False)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, mem):
        b, n, _ = x.shape
        k_len = mem.shape[1]
        split = lambda z, l: z.view(b, l, self.heads, self.dh).transpose(1, 2)
        m = self.nkv(mem)
        q, k, v = split(self.wq(self.nq(x)), n), split(self.wk(m), k_len), split(self.wv(m), k_len)
        att = torch.softmax(q @ k.transpose(2, 3) / self.dh**0.5, -1)
        x = x + self.wo((att @ v).transpose(1, 2).reshape(b, n, -1))
        return x + self.ff(self.nf(x))


def timed(fn):
    fn()
    out = []
    for _ in range(a.reps):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return statistics.median(out)


res = {"torch": torch.__version__, "threads": a.threads}
with torch.inference_mode():
    bert = BertModel.from_pretrained(a.minilm).eval()
    head = QueryHead(384, N_TOK, D, 6).eval()
    ids = (2000 + (torch.arange(8 * 256) * 7919) % 20000).view(8, 256)
    mask = torch.ones_like(ids)
    res["encode_8_docs_256_s"] = timed(
        lambda: head(bert(input_ids=ids, attention_mask=mask).last_hidden_state, mask == 0))
    blocks = nn.ModuleList([Block(D, 6, 64) for _ in range(4)]).eval()
    norm = nn.LayerNorm(D)
    q = torch.randn(1, N_TOK, D)
    for n_docs in (100, 200, 1000, 10000):
        mem = torch.randn(1, n_docs * N_TOK, D)

        def agg():
            x = q
            for blk in blocks:
                x = blk(x, mem)
            return norm(x)

        res[f"flat_{n_docs}_s"] = timed(agg)
print(json.dumps(res))
