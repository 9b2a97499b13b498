"""Inference latency of the forms of one model: training graph, BN-fused (what ``fuse()`` does) and deployed.

The forms are made from the same weights and timed side by side in one process: every repetition runs each form
once, in rotating order (interleaved), and the table reports the median and the ratio to the training graph measured
in the same run, plus the dense MACs per image each form executes. This is the measurement behind the choice of what
Ultralytics' ``fuse()`` folds (BNs only, or also RepConv/SepRep).

Usage (from the repository root):
    python -m benchmarks.deploy                          # n model, 640 px, batch 1, CPU: every form, ONNX included
    python -m benchmarks.deploy --weights best.pt        # a trained checkpoint (realistic firing for spike-driven)
    python -m benchmarks.deploy --readme README.md       # and regenerate the README's Deploy table
    python -m benchmarks.deploy --quick                  # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.common import environment, interleaved, table, write_readme_section


class Form:
    """One inference forward (eval, no grad) of a torch model on a fixed image."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor):
        self.model, self.x = model, x

    @torch.no_grad()
    def step(self) -> float:
        t = time.perf_counter()
        self.model(self.x)
        return time.perf_counter() - t


class OnnxForm:
    """One onnxruntime run of the model exported (traced on a blank image) to ONNX."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, folder: str):
        import onnxruntime as ort

        path = str(Path(folder) / "model.onnx")
        with torch.no_grad():
            torch.onnx.export(model, (torch.zeros_like(x),), path, input_names=["images"], dynamo=False)
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.feed = {"images": x.numpy()}

    def step(self) -> float:
        t = time.perf_counter()
        self.session.run(None, self.feed)
        return time.perf_counter() - t


class _ConvMacs(TorchDispatchMode):
    """Counts the multiply-accumulates of every convolution executed (modules and ``F.conv2d`` alike)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.convolution.default:
            w = args[1]
            self.total += out.numel() * w[0].numel()  # each output element: Cin/groups * kh * kw MACs
        return out


def dense_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Dense multiply-accumulates of every conv the model executes on ``x`` (spike planes included)."""
    with torch.no_grad(), _ConvMacs() as counter:
        model(x)
    return counter.total


def build(args) -> torch.nn.Module:
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    if args.weights:
        return YOLO(args.weights).model.float().eval()
    torch.manual_seed(0)
    return DetectionModel(f"spike-yolo-{args.family}-{args.scale}.yaml", nc=80, verbose=False).eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="ibra", help="ibra, ilif, iblif or ann (without --weights)")
    p.add_argument("--scale", default="n")
    p.add_argument("--weights", default="", help="a checkpoint instead of a fresh model")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-spike-driven", action="store_true", help="leave out the deployed model in spike-driven mode")
    p.add_argument("--no-onnx", action="store_true", help="leave out the deployed model exported to ONNX")
    p.add_argument("--readme", help="also rewrite the Deploy table of this README (between its markers)")
    p.add_argument("--quick", action="store_true", help="smoke run: 128 px, 2 repetitions")
    a = p.parse_args(argv)
    if a.quick:
        a.imgsz, a.reps, a.warmup = 128, 2, 1
    if a.threads:
        torch.set_num_threads(a.threads)
    from ibra_yolo.deployment import deploy, fuse_bn
    from ibra_yolo.spike_mode import set_spike_driven

    load = os.getloadavg()[0]
    train_graph = build(a)
    x = torch.rand(1, 3, a.imgsz, a.imgsz, generator=torch.Generator().manual_seed(0))
    models = {
        "training graph": train_graph,
        "BN-fused (fuse())": fuse_bn(copy.deepcopy(train_graph)),
        "deployed": deploy(copy.deepcopy(train_graph)),
    }
    if not a.no_spike_driven:
        models["deployed, spike-driven"] = set_spike_driven(deploy(copy.deepcopy(train_graph)))
    with tempfile.TemporaryDirectory() as folder:
        runners = {k: Form(m, x) for k, m in models.items()}
        if not a.no_onnx:
            runners["deployed, ONNX (onnxruntime)"] = OnnxForm(models["deployed"], x, folder)
        ref = {k: v for k, v in runners.items() if k in models}  # all agree with the training graph (checked here)
        with torch.no_grad():
            y0 = train_graph(x)[0]
            for k, r in ref.items():
                err = float((r.model(x)[0] - y0).abs().max() / y0.abs().max())
                print(f"{k}: max |output - training graph| / max |output| = {err:.1e}")
        median = interleaved(runners, a.reps, a.warmup)
    source = a.weights or f"spike-yolo-{a.family}-{a.scale}.yaml (fresh weights)"
    base = median["training graph"]
    rows = []
    for k, t in median.items():
        macs = dense_macs(models[k], x) / 1e9 if k in models else float("nan")
        rows.append([k, f"{t * 1e3:.1f}", f"{t / base:.2f}", f"{macs:.2f}" if k in models else "-"])
    md = (
        f"Inference latency of the model's forms ({a.imgsz} px, batch 1; {environment(torch.device('cpu'))} · "
        f"{source} · median of {a.reps}, interleaved; 1-minute load average before the run: {load:.1f})\n\n"
        + table(["form", "ms / image", "vs training graph", "GMACs executed (dense, all convs)"], rows)
    )
    print("\n" + md)
    if a.readme:
        write_readme_section(md, a.readme, "deploy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
