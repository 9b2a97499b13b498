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
from dataclasses import dataclass
from pathlib import Path

from ibra_yolo.cli.parser import ArgumentParser, UsageError, run_command
from ibra_yolo.errors import IbraYoloError, OutputExistsError
from ibra_yolo.files import check_folder, check_output, write_json
from ibra_yolo.limits import MAX_DEMO_IMAGES, MAX_IMGSZ

__all__ = (
    "DEFAULTS",
    "TRAIN_SETTINGS",
    "build_parser",
    "parse_args",
    "RunPaths",
    "prepare_out",
    "train_command",
    "learning_curve",
    "main",
)

MARKER = "ibra_yolo_demo.json"  # marks a folder this command created (its settings of the latest run)

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
        "--out",
        default="demo_out",
        help="output folder: new or empty; an earlier demo folder only with --overwrite and the same dataset settings",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="rerun into an earlier demo folder: replaces its coco_eval.json; training and evaluation go to new "
        "runs/trainN, runs/valN folders (earlier weights are kept) and data/ is reused, never deleted",
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


# train arguments --yolo-arg may not set: the demo's own files and folders, files the stock trainer would unpickle, and
# cfg (a YAML of arguments that would set all of these unchecked)
DEMO_OWNED = ("model", "data", "project", "name", "exist_ok", "resume", "pretrained", "cfg")
DEMO_OPTIONS = ("epochs", "imgsz", "batch", "device")  # set with the demo's own option of that name


def check_yolo_args(pairs: list[str]) -> None:
    """Check ``--yolo-arg KEY=VALUE`` pairs as the stock trainer will (known key, type, range), before any work.

    Raises:
        UsageError: An unknown key, or a value Ultralytics' configuration check refuses.
    """
    import logging
    import math

    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg, parse_key_value_pair

    overrides = {}
    for pair in pairs:
        try:
            key, value = parse_key_value_pair(pair)
        except (AssertionError, ValueError) as e:  # e.g. 'lr0=' (no value)
            raise UsageError(f"--yolo-arg {pair!r}: {str(e).strip() or 'expected KEY=VALUE'}") from None
        if key not in DEFAULT_CFG_DICT:
            raise UsageError(f"--yolo-arg {pair!r}: {key!r} is not a `yolo train` argument (see `yolo cfg`)")
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--yolo-arg {pair!r}: the value must be finite")
        overrides[key] = value
    quiet = logging.getLogger("ultralytics")
    level, quiet.level = quiet.level, logging.CRITICAL  # get_cfg logs a help block for what it refuses
    try:
        get_cfg(DEFAULT_CFG_DICT, overrides)
        if "optimizer" in overrides:  # get_cfg does not check names; the trainer would refuse one after the data
            _check_optimizer(overrides["optimizer"])
    except (TypeError, ValueError, SyntaxError) as e:
        raise UsageError(f"--yolo-arg: {' '.join(str(e).split())}") from None
    finally:
        quiet.level = level


def _check_optimizer(name) -> None:
    """Ask the stock trainer's ``build_optimizer`` whether it knows ``name`` (on a 1-parameter model, no trainer).

    Raises:
        UsageError: The trainer's refusal (its list of optimizers).
    """
    from types import SimpleNamespace

    import torch
    from ultralytics.engine.trainer import BaseTrainer

    stub = SimpleNamespace(args=SimpleNamespace(lr0=0.01, optimizer=name, warmup_bias_lr=0.0), data={"nc": 1})
    try:
        BaseTrainer.build_optimizer(stub, torch.nn.Linear(1, 1), name=name, iterations=1)
    except NotImplementedError as e:  # its refusal of an unknown name
        raise UsageError(f"--yolo-arg 'optimizer={name}': {str(e).split('. ')[0]}") from None
    except Exception:  # noqa: BLE001 - a known name whose set-up needs more than the stub holds: the trainer decides
        pass


def check_last_batch(p: ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before any work, a last training batch of one image at a size whose stride-32 map is 1x1 (BatchNorm
    cannot train on one value per channel): the stock trainer's own check, which comes after the dataset is made,
    with the ``fraction``, ``multi_scale`` and ``compile`` it reads from ``--yolo-arg``."""
    from ultralytics.cfg import smart_value

    train = {k.strip(): smart_value(v.strip()) for k, v in (a.split("=", 1) for a in args.yolo_arg)}
    n = args.n_train if train.get("fraction", 1.0) >= 1 else round(args.n_train * train["fraction"])
    dropped = bool(train.get("compile")) and n > args.batch and n % args.batch != 0  # compile drops a short last batch
    last = args.batch if dropped else n % args.batch or min(args.batch, n)
    smallest = max(32, int(args.imgsz * (1 - float(train.get("multi_scale") or 0)))) // 32 * 32
    if smallest < 64 and last == 1:
        used = ", ".join(f"{k}={train[k]}" for k in ("fraction", "multi_scale") if k in train)
        p.error(
            f"--imgsz {args.imgsz} with one image in the last training batch (--n-train {args.n_train}, --batch "
            f"{args.batch}{', ' + used if used else ''}) gives BatchNorm a single value per channel at stride 32: use "
            f"--imgsz 64 or more, or a --batch that leaves at least 2 images in the last batch"
        )


def check_args(p: ArgumentParser, args: argparse.Namespace) -> None:
    """The rules argparse cannot state; a violation is a ``UsageError``."""
    for k in ("epochs", "imgsz", "n_train", "n_val", "batch"):
        if getattr(args, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1")
    if args.imgsz < 32 or args.imgsz % 32:
        p.error("--imgsz must be a multiple of 32 (the model's largest stride), at least 32")
    if args.seed < 0:
        p.error(f"--seed {args.seed} is invalid: the dataset seed must be >= 0")
    bad = [a for a in args.yolo_arg if "=" not in a]
    if bad:
        p.error(f"--yolo-arg needs KEY=VALUE, got {bad[0]!r}")
    fixed = [a for a in args.yolo_arg if a.split("=", 1)[0].strip() in DEMO_OWNED]
    if fixed:  # the demo's own files and folders: a checkpoint here would be unpickled by the stock trainer
        p.error(f"--yolo-arg {fixed[0]!r}: the demo sets {', '.join(DEMO_OWNED)} itself (use --model, --out)")
    own = [a.split("=", 1)[0].strip() for a in args.yolo_arg if a.split("=", 1)[0].strip() in DEMO_OPTIONS]
    if own:  # the evaluation uses them too: two values would disagree
        p.error(f"--yolo-arg {own[0]}=...: use the demo's own --{own[0]} (training and evaluation share it)")
    if args.imgsz > MAX_IMGSZ:
        p.error(f"--imgsz {args.imgsz} is invalid: at most {MAX_IMGSZ}")
    for k in ("n_train", "n_val"):
        if getattr(args, k) > MAX_DEMO_IMAGES:
            p.error(f"--{k.replace('_', '-')} {getattr(args, k)} is invalid: at most {MAX_DEMO_IMAGES} images")
    check_yolo_args(args.yolo_arg)
    check_last_batch(p, args)
    if Path(args.model).suffix.lower() not in (".yaml", ".yml"):
        p.error(f"--model {args.model!r} is not a model YAML: the demo trains a model YAML from scratch (a .pt "
                "checkpoint is not accepted: its pickle would be loaded unchecked by the stock trainer)")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; raises ``UsageError`` on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


@dataclass
class RunPaths:
    """Where one demo run writes, all checked before any work starts."""

    out: Path  # the --out folder
    data: Path  # the dataset folder (reused when it holds this run's dataset)
    train_name: str  # runs/<train_name>: a folder no earlier run wrote
    val_name: str  # runs/<val_name>: likewise
    results: Path  # coco_eval.json


def _fresh_name(folder: Path, name: str) -> str:
    """``name``, or ``name2``, ``name3``, ... : the first that does not exist in ``folder``."""
    k = 1
    while (folder / (name if k == 1 else f"{name}{k}")).exists():
        k += 1
    return name if k == 1 else f"{name}{k}"


def prepare_out(out: Path, args: argparse.Namespace) -> RunPaths:
    """Check every output path of the run before any work, then mark the folder as the demo's.

    A new or empty folder is used; a folder the demo made earlier only with ``--overwrite`` (its ``coco_eval.json``
    is replaced, nothing else: training and evaluation get fresh ``runs/`` folders) and only when its ``data/``
    holds the dataset this run asks for, since ``data/`` is never deleted.

    Raises:
        PathError: ``--out`` (or a parent) is a file, or not writable.
        OutputExistsError: An earlier run without ``--overwrite``, a folder the demo did not make, or a ``data/``
            holding something else.
    """
    from ibra_yolo.data import check_dataset_root

    out = check_folder(Path(out).resolve(), "--out")
    earlier = (out / MARKER).is_file()
    if out.is_dir() and any(out.iterdir()) and not earlier:
        raise OutputExistsError(f"--out {out} is not empty and was not made by ibra-yolo demo: choose another folder")
    if earlier and not args.overwrite:
        raise OutputExistsError(
            f"--out {out} holds an earlier demo run: choose another --out, or pass --overwrite (replaces its "
            "coco_eval.json; earlier weights and data are kept)"
        )
    try:
        check_dataset_root(out / "data", args.n_train, args.n_val, args.imgsz, seed=args.seed)
    except OutputExistsError as e:
        raise OutputExistsError(f"--out {out}: {e}".replace("choose another folder", "choose another --out")) from None
    results = check_output(out / "coco_eval.json", overwrite=args.overwrite, flag="--out")
    paths = RunPaths(out, out / "data", _fresh_name(out / "runs", "train"), _fresh_name(out / "runs", "val"), results)
    settings = {k: getattr(args, k) for k in ("model", "epochs", "imgsz", "n_train", "n_val", "batch", "seed")}
    write_json(out / MARKER, {"made_by": "ibra-yolo demo", **settings}, overwrite=True)
    return paths


def yolo_executable() -> str:
    """The stock ``yolo`` command of this Python environment."""
    exe = shutil.which("yolo", path=str(Path(sys.executable).parent)) or shutil.which("yolo")
    if exe is None:
        raise IbraYoloError("the `yolo` command of Ultralytics is not on PATH: pip install ultralytics")
    return exe


def train_command(args: argparse.Namespace, data: Path, out: Path, name: str = "train") -> list[str]:
    """The stock ``yolo train`` command line of the demo (into ``out/runs/<name>``)."""
    settings = {
        "model": args.model,
        "data": str(data),
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "batch": args.batch,
        "workers": 0,
        "device": args.device,
        "project": str(out / "runs"),
        "name": name,
        "exist_ok": True,  # a fresh name (prepare_out): Ultralytics must not pick another one
        **TRAIN_SETTINGS,
    }
    settings.update(a.split("=", 1) for a in args.yolo_arg)
    return [yolo_executable(), "train", *(f"{k}={v}" for k, v in settings.items())]


def eval_command(
    args: argparse.Namespace, weights: Path, data: Path, out: Path, results: Path, name: str = "val"
) -> list[str]:
    """The ``ibra-yolo eval`` command line of the demo, run with this Python (``python -m ibra_yolo eval``)."""
    return [sys.executable, "-m", "ibra_yolo", "eval", "--weights", str(weights), "--data", str(data),
            "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--device", args.device,
            "--project", str(out / "runs"), "--name", name, "--out", str(results),
            *(["--overwrite"] if args.overwrite else []),
            *(["--spike-driven"] if args.spike_driven else [])]  # fmt: skip


# torch's vectorised kernels and oneDNN's convolutions are chosen by the CPU's instruction set, and their sums round
# differently: the same demo trained other weights on an AVX-512 CPU than on an AVX2 one (15.5 vs 14.6 % mAP@50:95).
# Pinned to AVX2, which every x86 CPU of the last decade has, the run is the same on both (README, "The main job").
PINNED_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pinned_kernels(device: str) -> dict[str, str]:
    """The environment that pins the demo's CPU kernels to AVX2 (`PINNED_KERNELS`): only for a CPU run on a CPU with
    AVX2 or AVX-512 (an older or non-x86 CPU has other kernels anyway), and never over a value the user set."""
    import torch

    if str(device).lower() != "cpu" or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return {}
    if any(k in os.environ for k in PINNED_KERNELS):
        return {}
    return dict(PINNED_KERNELS)


def _run(cmd: list[str], cwd: Path, what: str, pinned: dict[str, str]) -> None:
    print(f"\n$ {' '.join(cmd)}", flush=True)
    env = {**os.environ, "YOLO_OFFLINE": os.environ.get("YOLO_OFFLINE", "1"), **pinned}
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
    from ultralytics.nn.tasks import yaml_model_load

    import ibra_yolo
    from ibra_yolo.data import make_shapes_dataset
    from ibra_yolo.neurons import is_spiking_neuron, make_neuron
    from ibra_yolo.sources import select_device

    ibra_yolo.register()
    d = yaml_model_load(args.model)  # the model YAML is checked completely before any work (one line if it is bad)
    if args.spike_driven and not is_spiking_neuron(make_neuron(d["neuron"], d.get("T", 1))):  # was: after training
        raise IbraYoloError(
            f"--spike-driven needs a model with integer spiking neurons, but {args.model} has neuron "
            f"{d['neuron']}: choose an IBRA-LIF, IB-LIF or I-LIF model, or drop --spike-driven"
        )
    select_device(args.device)  # likewise the device: one line if it does not exist here
    t0 = time.time()
    times = {}
    paths = prepare_out(Path(args.out), args)
    out = paths.out
    print(f"[1/3] demo dataset: {args.n_train} train / {args.n_val} val images at {args.imgsz} px", flush=True)
    data = make_shapes_dataset(paths.data, args.n_train, args.n_val, args.imgsz, seed=args.seed)
    times["data"] = time.time() - t0

    print(f"[2/3] training {args.model} for {args.epochs} epochs with the stock yolo CLI", flush=True)
    pinned = pinned_kernels(args.device)
    if pinned:
        pins = " ".join(f"{k}={v}" for k, v in pinned.items())
        print(f"CPU kernels pinned to AVX2 ({pins}), so every x86 CPU with AVX2 or AVX-512 trains the same weights; "
              "set either variable yourself to choose", flush=True)  # fmt: skip
    _run(train_command(args, data, out, paths.train_name), out, "training", pinned)
    best = out / "runs" / paths.train_name / "weights" / "best.pt"
    if not best.is_file():
        raise IbraYoloError(f"training finished without writing {best}")
    times["train"] = time.time() - t0 - sum(times.values())

    print("[3/3] COCO evaluation of best.pt with ibra-yolo eval", flush=True)
    results = paths.results
    _run(eval_command(args, best, data, out, results, paths.val_name), out, "evaluation", pinned)
    times["eval"] = time.time() - t0 - sum(times.values())

    m = json.loads(results.read_text())
    curve = learning_curve(best.parents[1])
    from ultralytics.utils import NUM_THREADS  # what the stock trainer gave torch: min(8, CPUs - 1)

    kernels = "AVX2 kernels" if pinned else "this CPU's kernels"
    print(f"\ntraining ran on {NUM_THREADS} torch thread(s) with {kernels}: the same code, settings, thread count "
          "and kernels give the same weights bit for bit; others round sums differently")  # fmt: skip
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
