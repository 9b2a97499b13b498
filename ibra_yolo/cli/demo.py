"""``ibra-yolo demo``: the main job in one offline command.

Demo dataset -> IBRA-LIF (n scale) trained with the stock ``yolo train`` CLI -> COCO mAP with ``ibra-yolo eval``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ibra_yolo.cli.parser import ArgumentParser, run_command
from ibra_yolo.errors import IbraYoloError

__all__ = (
    "DEFAULTS",
    "TRAIN_SETTINGS",
    "build_parser",
    "parse_args",
    "prepare_out",
    "train_command",
    "learning_curve",
    "main",
)

MARKER = "ibra_yolo_demo.json"  # marks a folder this command created, so it may reuse and overwrite inside it

# Calibrated on a shared 2-core CPU: an epoch of 512 images at 64 px, batch 8, takes ~65 s there when lightly loaded,
# so 8 epochs finish in about 10 minutes end to end; a 10-epoch run reached COCO mAP@50 0.356 (0.329 after epoch 8).
DEFAULTS = {"imgsz": 64, "n_train": 512, "n_val": 128, "epochs": 8, "batch": 8}
# Stock Ultralytics training arguments for a short run from scratch on small images: many small AdamW steps, a short
# warm-up, and no mosaic (on 64 px shapes it slowed early learning: mAP@50 0.00 vs 0.10 after 2 epochs).
TRAIN_SETTINGS = {"optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 1, "mosaic": 0.0, "plots": False, "seed": 0}


def build_parser() -> ArgumentParser:
    """The command line of ``ibra-yolo demo``."""
    p = ArgumentParser(
        prog="ibra-yolo demo",
        description="Generate the demo dataset, train IBRA-LIF at the n scale with the stock `yolo train` and print "
        "its COCO metrics (ibra-yolo eval). Runs offline on a CPU in about 10 minutes with the defaults. "
        "(python tools/demo.py ... is the same command.)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--out", default="demo_out", help="output folder (refused if non-empty and not made by this command)"
    )
    p.add_argument("--model", default="spike-yolo-ibra-n.yaml", help="model YAML (any shipped spike-yolo-* name)")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="training epochs")
    p.add_argument("--imgsz", type=int, default=DEFAULTS["imgsz"], help="image size: data, training, evaluation")
    p.add_argument("--n-train", type=int, default=DEFAULTS["n_train"], help="training images to generate")
    p.add_argument("--n-val", type=int, default=DEFAULTS["n_val"], help="validation images to generate")
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"], help="batch size")
    p.add_argument("--device", default="cpu", help="Ultralytics device ('cpu', '0', ...)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated dataset")
    p.add_argument(
        "--yolo-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra or overriding `yolo train` argument, repeatable (e.g. --yolo-arg lr0=0.001 --yolo-arg mosaic=0)",
    )
    p.add_argument("--spike-driven", action="store_true", help="evaluate spike-driven (slower: a conv per bit plane)")
    return p


def check_args(p: ArgumentParser, args: argparse.Namespace) -> None:
    """The rules argparse cannot state; a violation is a ``UsageError``."""
    for k in ("epochs", "imgsz", "n_train", "n_val", "batch"):
        if getattr(args, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1")
    if args.imgsz < 32 or args.imgsz % 32:
        p.error("--imgsz must be a multiple of 32 (the model's largest stride), at least 32")
    bad = [a for a in args.yolo_arg if "=" not in a]
    if bad:
        p.error(f"--yolo-arg needs KEY=VALUE, got {bad[0]!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; raises ``UsageError`` on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def prepare_out(out: Path, args: argparse.Namespace) -> Path:
    """Create or reuse the output folder; refuse one that holds anything this command did not make."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise IbraYoloError(f"--out {out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise IbraYoloError(f"--out {out} is not empty and was not made by ibra-yolo demo: choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("model", "epochs", "imgsz", "n_train", "n_val", "batch", "seed")}
    (out / MARKER).write_text(json.dumps({"made_by": "ibra-yolo demo", **settings}, indent=2))
    return out


def yolo_executable() -> str:
    """The stock ``yolo`` command of this Python environment."""
    exe = shutil.which("yolo", path=str(Path(sys.executable).parent)) or shutil.which("yolo")
    if exe is None:
        raise IbraYoloError("the `yolo` command of Ultralytics is not on PATH: pip install ultralytics")
    return exe


def train_command(args: argparse.Namespace, data: Path, out: Path) -> list[str]:
    """The stock ``yolo train`` command line of the demo."""
    settings = {
        "model": args.model,
        "data": str(data),
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "batch": args.batch,
        "workers": 0,
        "device": args.device,
        "project": str(out / "runs"),
        "name": "train",
        "exist_ok": True,
        **TRAIN_SETTINGS,
    }
    settings.update(a.split("=", 1) for a in args.yolo_arg)
    return [yolo_executable(), "train", *(f"{k}={v}" for k, v in settings.items())]


def eval_command(args: argparse.Namespace, weights: Path, data: Path, out: Path, results: Path) -> list[str]:
    """The ``ibra-yolo eval`` command line of the demo, run with this Python (``python -m ibra_yolo eval``)."""
    return [sys.executable, "-m", "ibra_yolo", "eval", "--weights", str(weights), "--data", str(data),
            "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--device", args.device,
            "--project", str(out / "runs"), "--name", "val", "--out", str(results), "--overwrite",
            *(["--spike-driven"] if args.spike_driven else [])]  # fmt: skip


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    print(f"\n$ {' '.join(cmd)}", flush=True)
    env = {**os.environ, "YOLO_OFFLINE": os.environ.get("YOLO_OFFLINE", "1")}
    rc = subprocess.run(cmd, cwd=cwd, env=env).returncode
    if rc != 0:
        raise IbraYoloError(f"{what} failed (exit status {rc}); its output is above")


def learning_curve(run_dir: Path) -> list[float]:
    """mAP@50 after each epoch, as the stock trainer's validation logged it in ``results.csv``."""
    path = run_dir / "results.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return [float(r["metrics/mAP50(B)"]) for r in rows if r.get("metrics/mAP50(B)")]


def run(args: argparse.Namespace) -> int:
    """The three steps; prints the COCO metrics. Raises ``IbraYoloError`` on a problem the user can fix."""
    from ibra_yolo.data import make_shapes_dataset

    t0 = time.time()
    times = {}
    out = prepare_out(Path(args.out), args)
    print(f"[1/3] demo dataset: {args.n_train} train / {args.n_val} val images at {args.imgsz} px", flush=True)
    data = make_shapes_dataset(out / "data", args.n_train, args.n_val, args.imgsz, seed=args.seed, overwrite=True)
    times["data"] = time.time() - t0

    print(f"[2/3] training {args.model} for {args.epochs} epochs with the stock yolo CLI", flush=True)
    _run(train_command(args, data, out), out, "training")
    best = out / "runs" / "train" / "weights" / "best.pt"
    if not best.is_file():
        raise IbraYoloError(f"training finished without writing {best}")
    times["train"] = time.time() - t0 - sum(times.values())

    print("[3/3] COCO evaluation of best.pt with ibra-yolo eval", flush=True)
    results = out / "coco_eval.json"
    _run(eval_command(args, best, data, out, results), out, "evaluation")
    times["eval"] = time.time() - t0 - sum(times.values())

    m = json.loads(results.read_text())
    curve = learning_curve(best.parents[1])
    if curve:
        print("\nmAP@50 after each epoch (stock trainer's validation): " + " ".join(f"{v:.3f}" for v in curve))
    print(f"\ndemo finished in {(time.time() - t0) / 60:.1f} min (data {times['data']:.0f} s, training "
          f"{times['train']:.0f} s, evaluation {times['eval']:.0f} s): mAP@50:95 = {100 * m['mAP50-95']:.1f}, "
          f"mAP@50 = {100 * m['mAP50']:.1f} (%); weights {best}, results {results}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``ibra-yolo demo``; returns the exit status (0, or 2 after a one-line ``error:`` message)."""
    parser = build_parser()

    def body(args: argparse.Namespace) -> int:
        check_args(parser, args)
        return run(args)

    return run_command(parser, body, argv)
