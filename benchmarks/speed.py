"""Training-step and inference speed/memory of IBRA-LIF, I-LIF, IB-LIF and the ANN twin, measured side by side.

Every repetition runs each variant once, in rotating order (interleaved), and tables report medians and ratios to the
ANN twin measured in the same run. Memory: bytes autograd saves for the backward pass (exact, from saved-tensor
hooks), and the peak allocated memory (CUDA) or the peak resident-set growth of a fresh process per variant (CPU,
with glibc unmapping freed blocks so that the peak follows live tensors).

Usage (from the repository root):
    python -m benchmarks.speed                      # CPU defaults: train 320 px batch 4, inference 640 px batch 1
    python -m benchmarks.speed --device 0 --amp     # the same tables on a GPU with mixed precision
    python -m benchmarks.speed --quick              # a smoke run (few repetitions, small images)
    python -m benchmarks.speed --readme README.md   # and regenerate the README's Results tables
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from benchmarks.common import VARIANTS, build, environment, interleaved, saved_bytes, sync, table, write_readme_section


def fake_batch(batch: int, imgsz: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    n = 4 * batch  # four boxes per image
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g).to(device),
        "batch_idx": torch.arange(batch).repeat_interleave(4).float().to(device),
        "cls": torch.randint(0, 80, (n, 1), generator=g).float().to(device),
        "bboxes": (torch.rand(n, 4, generator=g) * 0.5 + 0.25).to(device),
    }


class Trainer:
    """One SGD step of the stock YOLO loss (forward + backward + optimizer)."""

    def __init__(self, family, scale, batch, imgsz, device, amp):
        self.model = build(family, scale, device).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.batch = fake_batch(batch, imgsz, device)
        self.device, self.amp = device, amp
        self.scaler = torch.amp.GradScaler(enabled=amp and device.type == "cuda")

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16) if self.amp else nullcontext()

    def step(self) -> float:
        sync(self.device)
        t = time.perf_counter()
        with self.autocast():
            loss, _ = self.model(self.batch)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss.sum()).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        sync(self.device)
        return time.perf_counter() - t

    def saved_bytes(self) -> int:
        """Bytes autograd keeps for backward in one forward (counted once per storage)."""
        with self.autocast():
            return saved_bytes(lambda: self.model(self.batch))


class Predictor:
    """One inference forward (eval, no grad), integer or spike-driven mode."""

    def __init__(self, family, scale, imgsz, device, amp, spike_driven=False):
        from ibra_yolo import set_spike_driven

        self.model = build(family, scale, device).eval()
        if spike_driven:
            set_spike_driven(self.model)
        self.x = torch.rand(1, 3, imgsz, imgsz, device=device)
        self.device, self.amp = device, amp

    @torch.no_grad()
    def step(self) -> float:
        sync(self.device)
        t = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.float16) if self.amp else nullcontext():
            self.model(self.x)
        sync(self.device)
        return time.perf_counter() - t


def cuda_peak(runner, device) -> int:
    """Peak allocated CUDA memory (bytes) of one step of ``runner``."""
    torch.cuda.reset_peak_memory_stats(device)
    runner.step()
    return torch.cuda.max_memory_allocated(device)


def peak_rss_growth(kind: str, family: str, scale: str, batch: int, imgsz: int, spike: bool = False) -> int:
    """Peak resident-set growth (bytes) of a fresh process over 3 steps (CPU only).

    Measured from just after the model (and optimizer) are built: for training it counts activations, gradients,
    optimizer state and workspace (gradient/momentum bytes are the same for every variant); for inference, the
    activations and workspace of one forward. glibc is told to map every block over 128 KiB separately and unmap it
    when freed, so the peak resident set follows the peak of live tensors instead of the allocator's cache.
    """
    child = [kind, family, scale, str(batch), str(imgsz), str(int(spike))]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.speed", "--rss-child", *child],
        cwd=Path(__file__).resolve().parents[1],  # the repository root, where `benchmarks` is a package
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
    ).stdout.split()
    return int(out[-1]) * 1024


def rss_child(kind: str, family: str, scale: str, batch: str, imgsz: str, spike: str) -> None:
    """In the fresh process of ``peak_rss_growth``: build, reset the peak mark, run 3 steps, print the growth in KiB."""
    cpu = torch.device("cpu")
    if kind == "train":
        runner = Trainer(family, scale, int(batch), int(imgsz), cpu, False)
    else:
        runner = Predictor(family, scale, int(imgsz), cpu, False, bool(int(spike)))
    base = rss_kib("VmRSS")
    reset_peak_rss()
    for _ in range(3):
        runner.step()
    print(rss_kib("VmHWM") - base)


def rss_kib(field: str) -> int:
    """Current (``VmRSS``) or peak (``VmHWM``) resident set of this process in KiB (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, or a CUDA index such as 0")
    p.add_argument("--scale", default="n", help="model scale (n, s, m, l)")
    p.add_argument("--train-imgsz", type=int, default=320)
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--infer-imgsz", type=int, default=640)
    p.add_argument("--reps", type=int, default=7, help="interleaved repetitions per variant")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--amp", action="store_true", help="float16 autocast (GPU)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--readme", help="also rewrite the speed section of this README (between its markers)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 repetitions at 128 px")
    p.add_argument("--rss-child", nargs=6, help=argparse.SUPPRESS)  # the fresh process of peak_rss_growth
    a = p.parse_args(argv)
    if a.rss_child:
        rss_child(*a.rss_child)
        return 0
    if a.quick:
        a.train_imgsz, a.infer_imgsz, a.reps, a.warmup = 128, 128, 2, 1
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cpu" if a.device == "cpu" else f"cuda:{a.device}")
    env = environment(device, scale=a.scale, AMP=a.amp)
    results = {"env": env}

    trainers = {v: Trainer(f, a.scale, a.train_batch, a.train_imgsz, device, a.amp) for v, f in VARIANTS.items()}
    t_train = interleaved(trainers, a.reps, a.warmup)
    saved = {v: t.saved_bytes() for v, t in trainers.items()}
    if device.type == "cuda":
        peak = {v: cuda_peak(t, device) for v, t in trainers.items()}
    else:
        del trainers
        peak = {v: peak_rss_growth("train", f, a.scale, a.train_batch, a.train_imgsz) for v, f in VARIANTS.items()}
    ann = "ANN twin"
    rows = [
        (
            v,
            f"{t_train[v] * 1e3:.0f}",
            f"{t_train[v] / t_train[ann]:.2f}",
            f"{saved[v] / 2**20:.0f}",
            f"{saved[v] / saved[ann]:.2f}",
            f"{peak[v] / 2**20:.0f}",
            f"{peak[v] / peak[ann]:.2f}",
        )
        for v in VARIANTS
    ]
    peak_name = "peak alloc MiB" if device.type == "cuda" else "peak RSS growth MiB"
    train_md = f"\n### Training step ({a.train_imgsz} px, batch {a.train_batch}) — {env}\n\n" + table(
        ["variant", "ms/step", "× ANN", "saved-for-backward MiB", "× ANN", peak_name, "× ANN"], rows
    )
    print(train_md)
    results["train"] = {v: {"s": t_train[v], "saved_bytes": saved[v], "peak_bytes": peak[v]} for v in VARIANTS}

    predictors = {f"{v} integer": Predictor(f, a.scale, a.infer_imgsz, device, a.amp) for v, f in VARIANTS.items()}
    for v in ("IBRA-LIF", "I-LIF"):
        predictors[f"{v} spike-driven"] = Predictor(VARIANTS[v], a.scale, a.infer_imgsz, device, a.amp, True)
    t_inf = interleaved(predictors, a.reps, a.warmup)
    mem = {}
    for name, pr in predictors.items():
        if device.type == "cuda":
            mem[name] = cuda_peak(pr, device)
        else:
            family, mode = VARIANTS[name.rsplit(" ", 1)[0]], name.rsplit(" ", 1)[1]
            mem[name] = peak_rss_growth("infer", family, a.scale, 1, a.infer_imgsz, mode == "spike-driven")
    base, mbase = t_inf["ANN twin integer"], mem["ANN twin integer"]
    rows = [
        (v, f"{t * 1e3:.0f}", f"{t / base:.2f}", f"{mem[v] / 2**20:.0f}", f"{mem[v] / mbase:.2f}")
        for v, t in t_inf.items()
    ]
    infer_md = f"\n### Inference ({a.infer_imgsz} px, batch 1) — {env}\n\n" + table(
        ["variant / mode", "ms/image", "× ANN twin", peak_name, "× ANN twin"], rows
    )
    print(infer_md)
    results["inference"] = {v: {"s": t_inf[v], "peak_bytes": mem[v]} for v in t_inf}
    if a.readme:
        write_readme_section(train_md + "\n" + infer_md, a.readme, "speed-benchmark")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
