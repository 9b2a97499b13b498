"""Accuracy of mixed-precision training on the demo data: float32 vs float16 vs bfloat16 autocast, same budget.

Ultralytics 8.4 trains in float32 on a CPU whatever ``amp`` says (``amp=True`` is switched off there, ``amp='bf16'``
stops with "bfloat16 autocast requires CUDA"), so this is a small driver around the stock pieces: the stock data
pipeline (``build_yolo_dataset``, demo augmentation without mosaic), the stock loss (``model(batch)``), AdamW at the
demo's learning rate (no weight decay) with one warm-up epoch and a linear decay, gradient clipping at 10 and
Ultralytics' EMA, as the stock trainer does, and the stock validator on the EMA model in float32 (Ultralytics' mAP, not
pycocotools). Forward and loss run under ``torch.autocast(dtype)`` as the stock trainer
runs them on a GPU, float16 with a gradient scaler, bfloat16 without one.

This CPU (AVX2) has no float16/bfloat16 convolution kernels: torch falls back to a per-group reference loop, 10-30x
slower. Convolutions of float16/bfloat16 tensors therefore run as float32 convolutions of the same values, their
outputs rounded back to the low precision: what a GPU's fp16/bf16 convolution computes (float32 accumulation, low
precision in and out) up to summation order. Every other op runs in the low precision as autocast decides.

Usage:
    python -m benchmarks.precision                                 # IBRA-LIF and the ANN twin, seeds 0 1, 4 epochs
    python -m benchmarks.precision --families ibra --epochs 2      # a quick look
    python -m benchmarks.precision --readme README.md              # and regenerate the README's precision table
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from contextlib import nullcontext
from datetime import date
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from benchmarks.common import table, write_readme_section
from ibra_yolo.cli import demo  # the demo's data and training settings

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
FAMILIES = {"ibra": "IBRA-LIF", "ilif": "I-LIF", "iblif": "IB-LIF", "ann": "ANN twin"}
_CONV = (torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default)


class LowPrecisionConvInFloat32(TorchDispatchMode):
    """Run float16/bfloat16 convolutions (forward and backward) as float32 convolutions of the same values and round
    the results back: a GPU low-precision convolution's numbers (float32 accumulation) at float32 speed on a CPU."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONV:
            low = {a.dtype for a in args if isinstance(a, torch.Tensor)} & {torch.float16, torch.bfloat16}
            if low:
                (dtype,) = low
                wide = tree_map(lambda a: a.float() if isinstance(a, torch.Tensor) and a.dtype == dtype else a, args)
                out = func(*wide, **kwargs)
                return tree_map(lambda o: o.to(dtype) if isinstance(o, torch.Tensor) else o, out)
        return func(*args, **kwargs)


def loader(data: dict, split: str, cfg, batch: int, shuffle: bool):
    from ultralytics.data import build_dataloader, build_yolo_dataset

    dataset = build_yolo_dataset(cfg, data[split], batch, data, mode="train" if shuffle else "val", stride=32)
    return build_dataloader(dataset, batch, workers=0, shuffle=shuffle)


def train_one(family: str, precision: str, seed: int, data_yaml: Path, a: argparse.Namespace) -> dict:
    """Train the n-scale model of ``family`` with autocast ``precision`` and return its validation mAP and time."""
    from ultralytics import YOLO
    from ultralytics.cfg import get_cfg
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils.torch_utils import ModelEMA, init_seeds

    dtype = PRECISIONS[precision]
    init_seeds(seed, deterministic=True)
    cfg = get_cfg(overrides={**demo.TRAIN_SETTINGS, "imgsz": a.imgsz, "batch": a.batch, "seed": seed})
    data = check_det_dataset(str(data_yaml))
    yolo = YOLO(f"spike-yolo-{family}-n.yaml")
    model = yolo.model = type(yolo.model)(yolo.model.yaml, nc=data["nc"], verbose=False)
    model.names, model.args = data["names"], cfg
    train = loader(data, "train", cfg, a.batch, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr0, betas=(cfg.momentum, 0.999), weight_decay=0.0)
    steps, warmup = a.epochs * len(train), len(train)  # one warm-up epoch, as the demo
    ema = ModelEMA(model)
    scaler = torch.amp.GradScaler("cpu", enabled=dtype is torch.float16)
    autocast = (lambda: torch.autocast("cpu", dtype=dtype)) if dtype else nullcontext
    losses, step, t = [], 0, time.time()
    with LowPrecisionConvInFloat32():
        for _ in range(a.epochs):
            model.train()
            for batch in train:
                lr = cfg.lr0 * (step + 1) / warmup if step < warmup else cfg.lr0 * (1 - (1 - cfg.lrf) * step / steps)
                for g in opt.param_groups:
                    g["lr"] = lr
                batch["img"] = batch["img"].float() / 255
                with autocast():
                    loss, items = model(batch)
                scaler.scale(loss.sum()).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                ema.update(model)
                losses.append(float(loss.sum()) / a.batch)
                step += 1
    train_s = time.time() - t
    if not all(math.isfinite(x) for x in losses):
        return {"mAP50-95": float("nan"), "mAP50": float("nan"), "train_s": train_s, "final_loss": float("nan")}
    yolo.model = ema.ema.float().eval()
    m = yolo.val(data=str(data_yaml), imgsz=a.imgsz, batch=a.batch, device="cpu", plots=False, verbose=False,
                 project=str(a.out / "val"), name=f"{family}-{precision}-{seed}", exist_ok=True)  # fmt: skip
    return {
        "mAP50-95": m.box.map,
        "mAP50": m.box.map50,
        "train_s": train_s,
        "final_loss": statistics.mean(losses[-20:]),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/precision-benchmark"), help="working folder")
    p.add_argument("--families", nargs="+", default=["ibra", "ann"], choices=list(FAMILIES))
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--imgsz", type=int, default=demo.DEFAULTS["imgsz"])
    p.add_argument("--n-train", type=int, default=demo.DEFAULTS["n_train"])
    p.add_argument("--n-val", type=int, default=demo.DEFAULTS["n_val"])
    p.add_argument("--batch", type=int, default=demo.DEFAULTS["batch"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (Ultralytics uses 1 on a 2-core CPU)")
    p.add_argument("--readme", help="also rewrite the precision section of this README (between its markers)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from ibra_yolo.data import make_shapes_dataset

    a.out = a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    data = make_shapes_dataset(a.out / "data", a.n_train, a.n_val, a.imgsz, seed=0)
    results_file = a.out / "precision.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for seed in a.seeds:
        for family in a.families:
            for precision in a.precisions:
                key = f"{family}/{precision}/{seed}/{a.epochs}"
                if key not in results:  # a finished run is never repeated: an interrupted benchmark resumes
                    results[key] = train_one(family, precision, seed, data, a)
                    results_file.write_text(json.dumps(results, indent=2))
                r = results[key]
                print(f"{FAMILIES[family]:9s} {precision} seed {seed}: mAP@50:95 {100 * r['mAP50-95']:.1f}  "
                      f"mAP@50 {100 * r['mAP50']:.1f}  loss {r['final_loss']:.3f}  {r['train_s'] / 60:.1f} min",
                      flush=True)  # fmt: skip

    rows = []
    for family in a.families:
        ref = statistics.mean(results[f"{family}/fp32/{s}/{a.epochs}"]["mAP50-95"] for s in a.seeds)
        for precision in a.precisions:
            rs = [results[f"{family}/{precision}/{s}/{a.epochs}"] for s in a.seeds]
            m, m50 = [100 * r["mAP50-95"] for r in rs], [100 * r["mAP50"] for r in rs]
            rows.append((FAMILIES[family], precision, f"{statistics.mean(m):.1f} ± {(max(m) - min(m)) / 2:.1f}",
                         f"{statistics.mean(m50):.1f}", " / ".join(f"{x:.1f}" for x in m),
                         f"{statistics.mean(m) / (100 * ref):.2f}" if ref else "-",
                         f"{statistics.mean(r['final_loss'] for r in rs):.3f}"))  # fmt: skip
    md = (
        f"\n### Mixed-precision training on the demo data ({date.today()}; n scale, {a.epochs} epochs at {a.imgsz} px, "
        f"{a.n_train} train / {a.n_val} val images, seeds {', '.join(map(str, a.seeds))}; Ultralytics mAP, "
        f"validation in float32)\n\n"
        + table(["model", "autocast", "mAP@50:95 (%)", "mAP@50 (%)", "per seed", "× fp32", "final train loss"], rows)
        + "\n\n± is half the seed spread (max − min) / 2."
    )
    print(md)
    if a.readme:
        write_readme_section(md, a.readme, "precision-benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())
