"""What the PyTorch references share: the base LM from a GGUF file or a
Hugging Face directory, in f32 on a device, and a GPU synchronisation for
timers (a no-op on the CPU)."""
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def load_lm(path, device):
    """(tokenizer, model in eval mode on `device`) from a GGUF file
    (dequantised to f32 by transformers) or a Hugging Face directory."""
    if os.path.isdir(path):
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        d, name = os.path.split(os.path.abspath(path))
        tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    return tok, model.to(device).eval()


def synchronizer(device):
    """A function that waits for `device`'s queued work (CUDA), else does nothing."""
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None
