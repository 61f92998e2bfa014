"""PyTorch reference for benches/benches/lm.rs: the same SmolLM2 GGUF,
dequantised to f32 by transformers, prefill of the same 128-token prompt
and one decode step after it. Prints JSON with median seconds.

The LM is a GGUF file or a Hugging Face directory (scripts/device-check.sh
passes a random-weight model of the same shape); --device cuda runs on the
GPU (timings synchronise it).

Usage: python lm_speed.py LM [--threads N] [--device cpu|cuda]
"""
import argparse, json, os, statistics, time
import torch

from load_lm import load_lm, synchronizer

ap = argparse.ArgumentParser()
ap.add_argument("lm", help="a GGUF file or a Hugging Face model directory")
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--reps", type=int, default=10)
ap.add_argument("--device", default="cpu")
a = ap.parse_args()
torch.set_num_threads(a.threads)
dev = torch.device(a.device)
sync = synchronizer(dev)
tok, model = load_lm(a.lm, dev)
ids = tok.encode("The history of the printing press begins in Mainz. " * 20, add_special_tokens=False)[:128]
x = torch.tensor([ids], device=dev)


def timed(fn):
    fn()  # warm-up
    out = []
    for _ in range(a.reps):
        sync()
        t = time.perf_counter(); fn(); sync(); out.append(time.perf_counter() - t)
    return statistics.median(out)


with torch.inference_mode():
    prefill = timed(lambda: model(x, use_cache=True).logits[:, -1].argmax(-1))
    past = model(x, use_cache=True).past_key_values
    import copy
    step = torch.tensor([[42]], device=dev)

    def decode():
        p = copy.deepcopy(past)
        sync()
        t = time.perf_counter()
        model(step, past_key_values=p, use_cache=True).logits.argmax(-1)
        sync()
        return time.perf_counter() - t

    decode()
    dec = statistics.median([decode() for _ in range(a.reps)])
print(json.dumps({"torch": torch.__version__, "threads": a.threads, "device": a.device, "prefill_128_s": prefill,
                  "decode_1_after_128_s": dec}))
