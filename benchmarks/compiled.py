"""Compiled vs eager training step and inference of IBRA-LIF and the ANN twin, and the GPU mixed-precision matrix.

Both modes run the step the stock trainer runs with ``compile=True``: the model (``torch.compile``, inductor) on the
images, then the stock loss eagerly on its predictions, backward and an SGD step. Eager runs the very same split, so
the two differ only in compilation. Every repetition runs each runner once in rotating order (interleaved); tables
report medians, and ratios measured side by side in one run. Compilation happens in the warm-up and is reported
separately (seconds for the first step).

Usage:
    python -m benchmarks.compiled                        # CPU tables: train 320 px batch 4, inference 640 px batch 1
    python -m benchmarks.compiled --readme README.md     # and regenerate the README's compiled-vs-eager tables
    python -m benchmarks.compiled --saved                # saved-for-backward bytes, compiled vs eager (no timing)
    python -m benchmarks.compiled --matrix --device 0    # GPU: eager/compiled x fp16/bf16 x IBRA/ANN x m, n at 640 px
    python -m benchmarks.compiled --matrix --dry-run     # the matrix's every code path on CPU, tiny model and images
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from contextlib import nullcontext
from datetime import date
from pathlib import Path

import torch

from benchmarks.common import interleaved, saved_bytes, sync, table, write_readme_section
from benchmarks.speed import fake_batch

FAMILIES = {"IBRA-LIF": "ibra", "ANN twin": "ann"}
DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
# The matrix's dry run: a model with every block type of the real ones, small enough to compile in a minute on a CPU.
TINY = {
    "nc": 80,
    "T": 1,
    "backbone": [
        [-1, 1, "TimeRepeat", []],
        [-1, 1, "Downsample", [16, 7, 4, 2, True]],
        [-1, 1, "AllConvBlock", [2]],
        [-1, 1, "Downsample", [32, 3, 2, 1]],
        [-1, 1, "ConvBlock", [2]],
        [-1, 1, "Downsample", [64, 3, 2, 1]],
        [-1, 1, "SPPF", [64, 5]],
    ],
    "head": [
        [-1, 1, "SConv", [32, 1]],
        [-1, 1, "Upsample", [2]],
        [[-1, 4], 1, "Concat", []],
        [-1, 1, "SConv", [32, 1]],
        [[10, 7], 1, "SpikeDetect", ["nc"]],
    ],
}


def build(family: str, scale: str, device: torch.device):
    """The model of ``family`` at ``scale`` (``"tiny"``: the dry run's model with that family's neuron)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    torch.manual_seed(0)
    if scale == "tiny":
        cfg = {**TINY, "neuron": yaml_model_load(f"spike-yolo-{family}-n.yaml")["neuron"]}
    else:
        cfg = f"spike-yolo-{family}-{scale}.yaml"
    model = DetectionModel(cfg, nc=80, verbose=False).to(device)
    model.args = get_cfg()
    return model


class Step:
    """One SGD step as the stock trainer runs it with ``compile=True``: ``preds = net(img)``, the stock loss on them
    (eager), backward, optimizer; under autocast ``dtype`` (a gradient scaler for float16, as Ultralytics)."""

    def __init__(self, family, scale, batch, imgsz, device, compiled=False, dtype=None):
        self.model = build(family, scale, device).train()
        self.net = torch.compile(self.model) if compiled else self.model
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.batch = fake_batch(batch, imgsz, device)
        self.device, self.dtype = device, dtype
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext()

    def step(self) -> float:
        sync(self.device)
        t = time.perf_counter()
        with self.autocast():
            preds = self.net(self.batch["img"])
            loss, _ = self.model.loss(self.batch, preds)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss.sum()).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        sync(self.device)
        return time.perf_counter() - t

    def saved_bytes(self) -> int:
        """Bytes autograd keeps for backward in one training forward (compiled: what inductor's partitioner keeps)."""
        with self.autocast():
            return saved_bytes(lambda: self.model.loss(self.batch, self.net(self.batch["img"])))


class Infer:
    """One inference forward (eval, no grad), eager or compiled."""

    def __init__(self, family, scale, imgsz, device, compiled=False):
        self.model = build(family, scale, device).eval()
        self.net = torch.compile(self.model) if compiled else self.model
        self.x = torch.rand(1, 3, imgsz, imgsz, device=device)
        self.device = device

    @torch.no_grad()
    def step(self) -> float:
        sync(self.device)
        t = time.perf_counter()
        self.net(self.x)
        sync(self.device)
        return time.perf_counter() - t


def first_steps(runners: dict) -> dict[str, float]:
    """Seconds of each runner's first step (compilation for compiled runners)."""
    return {name: r.step() for name, r in runners.items()}


def environment(device: torch.device, extra: str = "") -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    return f"{date.today()} · {platform.processor() or platform.machine()} · torch {torch.__version__} · {where}{extra}"


# ----------------------------------------------------------------------------------------------------------------------
# CPU tables: compiled vs eager, IBRA-LIF vs the ANN twin
# ----------------------------------------------------------------------------------------------------------------------
def compiled_tables(a: argparse.Namespace, device: torch.device) -> tuple[str, dict]:
    """Training-step and inference tables (markdown) and their numbers."""
    env = environment(device, f" · scale {a.scale}")
    results = {}
    sections = []
    for kind, make, size in (
        ("train", lambda f, c: Step(f, a.scale, a.train_batch, a.train_imgsz, device, c), a.train_imgsz),
        ("inference", lambda f, c: Infer(f, a.scale, a.infer_imgsz, device, c), a.infer_imgsz),
    ):
        modes = ("eager", "compiled")
        runners = {(v, mode): make(f, mode == "compiled") for v, f in FAMILIES.items() for mode in modes}
        first = first_steps(runners)
        t = interleaved(runners, a.reps, a.warmup)
        rows = []
        for v, mode in runners:
            base = t[("ANN twin", mode)]
            rows.append((v, mode, f"{t[(v, mode)] * 1e3:.0f}", f"{t[(v, mode)] / base:.3f}",
                         f"{t[(v, 'compiled')] / t[(v, 'eager')]:.2f}" if mode == "compiled" else "1",
                         f"{first[(v, mode)]:.0f}"))  # fmt: skip
        train = kind == "train"
        what = f"Training step ({size} px, batch {a.train_batch})" if train else f"Inference ({size} px, batch 1)"
        headers = ["variant", "mode", "ms/step" if train else "ms/image", "× ANN twin (same mode)", "× eager",
                   "first step s (compiles)"]  # fmt: skip
        sections.append(f"\n### {what}, compiled vs eager — {env}\n\n" + table(headers, rows))
        results[kind] = {f"{v} {mode}": {"s": t[(v, mode)], "first_s": first[(v, mode)]} for v, mode in runners}
        del runners
        torch._dynamo.reset()
    return "\n".join(sections), {"env": env, **results}


def saved_table(a: argparse.Namespace, device: torch.device) -> tuple[str, dict]:
    """Saved-for-backward bytes of one training forward, eager vs compiled, IBRA-LIF vs the ANN twin (no timing)."""
    env = environment(device, f" · scale {a.scale}")
    rows, results = [], {}
    for mode in ("eager", "compiled"):
        got = {}
        for v, f in FAMILIES.items():
            step = Step(f, a.scale, a.train_batch, a.train_imgsz, device, mode == "compiled")
            step.step()  # compiles; the count below is of the graph that then runs
            got[v] = step.saved_bytes()
            del step
            torch._dynamo.reset()
        for v, n in got.items():
            rows.append((v, mode, f"{n / 2**20:.1f}", f"{n / got['ANN twin']:.3f}"))
            results[f"{v} {mode}"] = n
    what = f"Saved for backward ({a.train_imgsz} px, batch {a.train_batch}), compiled vs eager — {env}"
    headers = ["variant", "mode", "MiB saved for backward", "× ANN twin (same mode)"]
    return f"\n### {what}\n\n" + table(headers, rows), {"env": env, **results}


# ----------------------------------------------------------------------------------------------------------------------
# GPU matrix: eager/compiled x fp16/bf16 x IBRA-LIF/ANN twin x scales, training step time and peak memory
# ----------------------------------------------------------------------------------------------------------------------
def peak_bytes(runner, device: torch.device) -> int | None:
    """Peak ``torch.cuda.max_memory_allocated`` over one step (None on a CPU)."""
    if device.type != "cuda":
        runner.step()
        return None
    torch.cuda.reset_peak_memory_stats(device)
    runner.step()
    return torch.cuda.max_memory_allocated(device)


def matrix(a: argparse.Namespace, device: torch.device) -> tuple[str, dict]:
    """One table: every (scale, precision, family, mode) cell, measured group by group within a time budget.

    A group is one scale and precision: its four runners (two families, eager and compiled) are built, compiled,
    timed interleaved, measured for peak memory, then freed. A group starts only if the time used so far plus the
    last group's duration fits the budget; the others are listed as not run. The table so far is printed after every
    group, so a run stopped from outside still leaves its finished groups.
    """
    start, last = time.time(), 0.0
    rows, results = [], {}
    env = environment(device, f" · {a.imgsz} px")
    headers = ["scale", "batch", "autocast", "variant", "mode", "ms/step", "× ANN twin", "speed-up vs eager",
               "peak alloc GiB", "× ANN twin"]  # fmt: skip
    for scale, batch in a.scales:
        for prec in a.precisions:
            if time.time() - start + last > a.budget_s:
                rows += [(scale, batch, prec, v, m, "not run (time budget)", "", "", "", "")
                         for v in FAMILIES for m in ("eager", "compiled")]  # fmt: skip
                continue
            t0 = time.time()
            torch._dynamo.reset()  # each group compiles afresh (and never hits dynamo's recompile limit)
            runners = {(v, m): Step(f, scale, batch, a.imgsz, device, m == "compiled", DTYPES[prec])
                       for v, f in FAMILIES.items() for m in ("eager", "compiled")}  # fmt: skip
            first = first_steps(runners)
            t = interleaved(runners, a.reps, a.warmup)
            peak = {k: peak_bytes(r, device) for k, r in runners.items()}
            for v, m in runners:
                ann, eager = t[("ANN twin", m)], t[(v, "eager")]
                mem = peak[(v, m)]
                rows.append((scale, batch, prec, v, m, f"{t[(v, m)] * 1e3:.1f}", f"{t[(v, m)] / ann:.3f}",
                             f"{eager / t[(v, m)]:.2f}", "-" if mem is None else f"{mem / 2**30:.2f}",
                             "-" if mem is None else f"{mem / peak[('ANN twin', m)]:.3f}"))  # fmt: skip
                cell = {"s": t[(v, m)], "first_s": first[(v, m)], "peak_bytes": mem}
                results[f"{scale} b{batch} {prec} {v} {m}"] = cell
            del runners
            if device.type == "cuda":
                torch.cuda.empty_cache()
            last = time.time() - t0
            compile_s = ", ".join(f"{v} {first[(v, 'compiled')]:.0f} s" for v in FAMILIES)
            print(f"\n{scale} b{batch} {prec}: {last:.0f} s (first compiled step: {compile_s}); table so far:\n"
                  + table(headers, rows), flush=True)  # fmt: skip
    md = f"\n### Training step: eager vs compiled, fp16 vs bf16 — {env}\n\n" + table(headers, rows)
    return md, {"env": env, **results}


def parse_scales(text: str) -> list[tuple[str, int]]:
    """``"m:10,n:10"`` -> ``[("m", 10), ("n", 10)]``."""
    out = []
    for item in text.split(","):
        scale, _, batch = item.partition(":")
        out.append((scale.strip(), int(batch)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, or a CUDA index such as 0")
    p.add_argument("--scale", default="n", help="CPU tables: model scale")
    p.add_argument("--train-imgsz", type=int, default=320)
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--infer-imgsz", type=int, default=640)
    p.add_argument("--reps", type=int, default=7, help="interleaved repetitions per runner")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the first (compiling) one")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--matrix", action="store_true", help="the GPU matrix instead of the CPU tables")
    p.add_argument("--saved", action="store_true", help="saved-for-backward bytes instead of the CPU time tables")
    p.add_argument("--scales", type=parse_scales, default="m:10,n:10", help="matrix: scale:batch pairs")
    p.add_argument("--precisions", nargs="+", default=["fp16", "bf16"], choices=list(DTYPES))
    p.add_argument("--imgsz", type=int, default=640, help="matrix: image size")
    p.add_argument("--budget-s", type=float, default=270, help="matrix: seconds within which groups must fit")
    p.add_argument("--dry-run", action="store_true", help="matrix on CPU: tiny model, 64 px, batch 2, no time budget")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--readme", help="also rewrite the README section (markers) of these tables")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.dry_run:
        a.matrix, a.device, a.scales, a.imgsz, a.reps, a.warmup = True, "cpu", [("tiny", 2)], 64, 1, 0
        a.budget_s = float("inf")
    device = torch.device("cpu" if a.device == "cpu" else f"cuda:{a.device}")
    import ibra_yolo

    ibra_yolo.register()  # also without the installed autoload hook (a bare checkout on PYTHONPATH)
    kind = "gpu" if a.matrix else "compiled-saved" if a.saved else "compiled"
    md, results = {"gpu": matrix, "compiled-saved": saved_table, "compiled": compiled_tables}[kind](a, device)
    print(md, flush=True)
    if a.readme:
        write_readme_section(md, a.readme, f"{kind}-benchmark")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
