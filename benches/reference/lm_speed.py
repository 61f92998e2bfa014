"""PyTorch reference for benches/benches/lm.rs: the same SmolLM2 GGUF,
dequantised to f32 by transformers, prefill of the same 128-token prompt
and one decode step after it. Prints JSON with median seconds.

Usage: python lm_speed.py GGUF_PATH [--threads N]
"""
import argparse, json, os, statistics, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("gguf")
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--reps", type=int, default=10)
a = ap.parse_args()
torch.set_num_threads(a.threads)
d, name = os.path.split(os.path.abspath(a.gguf))
tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
ids = tok.encode("The history of the printing press begins in Mainz. " * 20, add_special_tokens=False)[:128]
x = torch.tensor([ids])


def timed(fn):
    fn()  # warm-up
    out = []
    for _ in range(a.reps):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return statistics.median(out)


with torch.inference_mode():
    prefill = timed(lambda: model(x, use_cache=True).logits[:, -1].argmax(-1))
    past = model(x, use_cache=True).past_key_values
    import copy
    step = torch.tensor([[42]])

    def decode():
        p = copy.deepcopy(past)
        t = time.perf_counter()
        model(step, past_key_values=p, use_cache=True).logits.argmax(-1)
        return time.perf_counter() - t

    decode()
    dec = statistics.median([decode() for _ in range(a.reps)])
print(json.dumps({"torch": torch.__version__, "threads": a.threads, "prefill_128_s": prefill,
                  "decode_1_after_128_s": dec}))
