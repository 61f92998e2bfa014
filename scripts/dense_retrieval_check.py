"""How well the similarity prior's keys find a question's own document.

Reads the document texts of a memory bank written by `mac eval`
(RUN/eval/bank) and the questions of its predictions.jsonl, embeds both with
sentence-transformers' all-MiniLM-L6-v2 weights in PyTorch (mean pooling,
L2 normalisation: the same keys the Rust key encoder stores), and prints
top-1 / top-5 retrieval accuracy and the share of softmax(scale * cos) on
the gold document for a few scales. An independent check of
`mac_aggregation::SimilarityPrior`'s premise; not part of the build.

Usage: python dense_retrieval_check.py RUN/eval/bank RUN/eval/predictions.jsonl MINILM_DIR
"""
import glob, json, os, struct, sys

import torch
from transformers import AutoTokenizer, BertModel

bank, preds, minilm = sys.argv[1:4]
docs = []
for seg in sorted(glob.glob(os.path.join(bank, "seg-*.bin"))):
    data, o = open(seg, "rb").read(), 0
    while o < len(data):
        assert data[o:o + 4] == b"MACE", f"{seg}: bad record at {o}"
        body_len = struct.unpack("<I", data[o + 4:o + 8])[0]
        body = data[o + 8:o + 8 + body_len]
        source_len, text_len = struct.unpack("<II", body[56:64])
        docs.append(body[64 + source_len:64 + source_len + text_len].decode())
        o += 12 + body_len
qs = [json.loads(l) for l in open(preds)]
qs = [q for q in qs if q["method"] == "mac"]

tok, model = AutoTokenizer.from_pretrained(minilm), BertModel.from_pretrained(minilm).eval()


@torch.no_grad()
def embed(texts, max_len):
    out = []
    for i in range(0, len(texts), 32):
        t = tok(texts[i:i + 32], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        h = model(**t).last_hidden_state
        m = t["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


sim = embed([q["question"] for q in qs], 64) @ embed(docs, 256).T
gold = torch.tensor([q["document"] for q in qs])
rows = torch.arange(len(qs))
rank = (sim > sim[rows, gold].unsqueeze(1)).sum(1)
result = {
    "documents": len(docs),
    "questions": len(qs),
    "top1": (rank == 0).float().mean().item(),
    "top5": (rank < 5).float().mean().item(),
    "gold_share": {s: torch.softmax(s * sim, 1)[rows, gold].mean().item() for s in (10, 20, 50, 100)},
}
print(json.dumps(result, indent=1))
