"""llama.cpp reference for benches/benches/lm.rs: the same GGUF file, at
the quantization it is stored in, through llama-cpp-python (llama.cpp's
CPU kernels); prefill of the same 128-token prompt, one decode step after
it, and 64 greedy tokens after it. Prints JSON with median seconds.

Usage: python llama_cpp_speed.py LM.gguf [--threads N] [--reps N]
"""
import argparse, json, os, statistics, time

import llama_cpp
from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("lm", help="a GGUF file")
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--reps", type=int, default=10)
a = ap.parse_args()
llm = Llama(model_path=a.lm, n_ctx=512, n_batch=512, n_threads=a.threads,
            n_threads_batch=a.threads, verbose=False)
text = "The history of the printing press begins in Mainz. " * 20
ids = llm.tokenize(text.encode(), add_bos=False, special=False)[:128]


def median_of(fn):
    fn()  # warm-up
    return statistics.median(fn() for _ in range(a.reps))


def prefill():
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)  # logits of the last token, as the Rust side's argmax reads
    return time.perf_counter() - t


def decode():
    # The cache holds the 128 prompt tokens; `eval` drops anything after them.
    llm.n_tokens = len(ids)
    t = time.perf_counter()
    llm.eval([42])
    return time.perf_counter() - t


def generate():
    # Greedy, 64 tokens after the prompt (prefill included), never stopping.
    t = time.perf_counter()
    llm.reset()
    llm.eval(ids)
    for _ in range(64):
        llm.eval([int(llm.scores[llm.n_tokens - 1].argmax())])
    return time.perf_counter() - t


prefill_s = median_of(prefill)
generate_s = statistics.median(generate() for _ in range(max(3, a.reps // 3)))
llm.reset()
llm.eval(ids)
decode_s = median_of(decode)
print(json.dumps({"llama_cpp": llama_cpp.__version__, "threads": a.threads, "tokens": len(ids),
                  "prefill_128_s": prefill_s, "decode_1_after_128_s": decode_s,
                  "generate_64_after_128_s": generate_s}))
