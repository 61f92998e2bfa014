"""The device check's report (scripts/device-check.sh run parity|timing):
parity on cuda and wgpu, and mac-rs against PyTorch on the same GPU, as
Markdown; each section only where its files are in OUT_DIR.

Usage: python3 device-report.py OUT_DIR   (reads parity-summary.txt,
parity.log, timing-summary.txt, mac-cuda.json, torch.json there; prints the
report)
"""
import json, os, re, sys

out = sys.argv[1]


def read(name):
    path = os.path.join(out, name)
    return open(path).read() if os.path.exists(path) else ""


print("# Device check\n")
for name in ("parity-summary.txt", "timing-summary.txt"):
    summary = read(name).strip().splitlines()
    if summary:
        print(f"GPU: {summary[0]}\n")
        print("```\n" + "\n".join(summary[1:]) + "\n```\n")

# Parity: every "NAME: max |diff| = X" line, by backend section.
diffs, device, failed = {}, None, []
for line in read("parity.log").splitlines():
    m = re.match(r"=== (\w+)", line)
    if m:
        device = m.group(1)
        continue
    m = re.search(r"(.+?):? max \|diff\| = ([0-9.eE+-]+)", line)
    if m and device:
        diffs.setdefault(m.group(1).strip(), {})[device] = float(m.group(2))
    if "FAILED" in line or "panicked" in line:
        failed.append(f"{device}: {line.strip()}")
if diffs or failed:
    print("## Parity against the committed `transformers` fixtures (max |diff|)\n")
    print("| check | cuda | wgpu |\n|---|---|---|")
    for name, by in diffs.items():
        cell = lambda d: f"{by[d]:.2e}" if d in by else "–"
        print(f"| {name} | {cell('cuda')} | {cell('wgpu')} |")
    if failed:
        print("\nFailures:\n\n" + "\n".join(f"- {f}" for f in failed[:20]))

mac = json.loads(read("mac-cuda.json") or "{}")
backend = mac.get("backend", "cuda")
torch_lines = [json.loads(l) for l in read("torch.json").splitlines() if l.strip().startswith("{")]
torch_step = next((t for t in torch_lines if "train_step_s" in t and "parts" not in t), {})
torch_profile = next((t for t in torch_lines if "parts" in t), {})
torch_lm = next((t for t in torch_lines if "prefill_128_s" in t), {})


def row(name, ours, theirs, unit="ms", scale=1e3):
    if ours is None and theirs is None:
        return
    fmt = lambda v: "–" if v is None else f"{v * scale:.1f}"
    ratio = f"{ours / theirs:.2f}" if ours and theirs else "–"
    print(f"| {name} | {fmt(ours)} | {fmt(theirs)} | {ratio} |")


if mac or torch_lines:
    print(f"\n## Speed on {backend}: random weights of the real shapes, both sides in one run\n")
    print(f"PyTorch {torch_step.get('torch', torch_lm.get('torch', '?'))}; medians.\n")
    print("| measurement | mac-rs (ms) | PyTorch (ms) | ratio |\n|---|---|---|---|")
    row("training step, default preset", mac.get("train_step_s"), torch_step.get("train_step_s"))
    row("prefill, 128 tokens", mac.get("prefill_128_s"), torch_lm.get("prefill_128_s"))
    row("decode, 1 token after 128", mac.get("decode_1_after_128_s"), torch_lm.get("decode_1_after_128_s"))

ours = {p["name"]: p["seconds"] for p in mac.get("profile", {}).get("parts", [])}
theirs = {p["name"]: p["seconds"] for p in torch_profile.get("parts", [])}
if ours or theirs:
    print(f"\n## The training step by part on {backend}\n")
    print("| part | mac-rs (ms) | PyTorch (ms) | ratio |\n|---|---|---|---|")
    for name in list(ours) + [n for n in theirs if n not in ours]:
        row(name, ours.get(name), theirs.get(name))
    row("**step (profiled)**", mac.get("profile", {}).get("total"), torch_profile.get("total"))
