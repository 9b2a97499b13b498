"""Why does IBRA-LIF trail its ANN twin? Ablations on the demo data, measured side by side at an equal budget.

Every variant is the n-scale model of one of our YAMLs with one change (the neuron, its straight-through window, its
range, or a training argument), trained with the stock ``yolo train`` and otherwise **stock Ultralytics defaults**
(``optimizer=auto``, its learning rate, warm-up and mosaic), scored with ``ibra-yolo eval`` (pycocotools), and
-- for spiking variants -- measured with ``ibra-yolo energy`` for the share of membrane values clipped at ``M``
(``clip%``) and in the upper half of the range (``hi%``). Every variant runs the same seeds; the table gives the mean,
half the seed spread (max - min) / 2, every seed, and the ratio of the mean to that of the ANN twin trained with the
same arguments (``twin``).

Runs are independent processes (``--jobs`` at a time, one CPU thread each, as Ultralytics trains on a 2-core CPU);
a finished run is never repeated (its ``result.json`` is reused), so an interrupted benchmark resumes where it stopped.
On an x86 CPU the runs pin torch's and oneDNN's kernels to AVX2, as the demo does (``ibra_yolo.cli.demo.
pinned_kernels``): a seed then trains the same weights on an AVX-512 machine as on an AVX2 one, so rows measured on
different machines compare. The working folder records the pinning and refuses runs made otherwise.

Usage (from the repository root):
    python -m benchmarks.ablation                         # all variants, seeds 0 1 2, 2 runs at a time
    python -m benchmarks.ablation --variants ann ibra     # a subset
    python -m benchmarks.ablation --readme README.md      # and regenerate the README's ablation table
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import yaml

from benchmarks.common import write_readme_section
from ibra_yolo.cli.demo import pinned_kernels

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "OMP_NUM_THREADS": "1", **pinned_kernels("cpu")}

# name: (base YAML, neuron override or None, extra `yolo train` arguments, what it asks)
VARIANTS = {
    "ann": ("spike-yolo-ann.yaml", None, {}, "ANN twin (ReLU): the reference"),
    "ibra": ("spike-yolo-ibra.yaml", None, {}, "IBRA-LIF as in the paper (D 5.11, N 100, window STE)"),
    "ann-clip": ("spike-yolo-ann.yaml", {"kind": "ReLU", "D": 5.11}, {}, "is it the clip? ReLU clipped at D"),
    "ann-clip8": ("spike-yolo-ann.yaml", {"kind": "ReLU", "D": 8.0}, {}, "the clip at D 8: ReLU clipped at 8"),
    "ann-clip16": ("spike-yolo-ann.yaml", {"kind": "ReLU", "D": 16.0}, {}, "the clip at D 16: ReLU clipped at 16"),
    "ibra-N1e4": ("spike-yolo-ibra.yaml", {"kind": "IBRALIF", "D": 5.11, "N": 10000}, {}, "is it the quantisation?"),
    "ibra-ste0.5": ("spike-yolo-ibra.yaml", {"kind": "IBRALIF", "ste_above": 0.5}, {}, "STE gradient 0.5 above D"),
    "ibra-D8": ("spike-yolo-ibra.yaml", {"kind": "IBRALIF", "D": 8.0, "N": 100}, {}, "a wider range, same N"),
    "ibra-D8-ste0.5": (
        "spike-yolo-ibra.yaml",
        {"kind": "IBRALIF", "D": 8.0, "N": 100, "ste_above": 0.5},
        {},
        "D 8 and STE 0.5 above D",
    ),
    "ibra-D16": ("spike-yolo-ibra.yaml", {"kind": "IBRALIF", "D": 16.0, "N": 100}, {}, "a much wider range"),
    "ibra-D32": ("spike-yolo-ibra.yaml", {"kind": "IBRALIF", "D": 32.0, "N": 100}, {}, "wider still (M 3,200)"),
    "ibra-lr": ("spike-yolo-ibra.yaml", None, {"optimizer": "AdamW", "lr0": 0.002}, "the demo's AdamW lr0 0.002"),
    "ibra-D16-lr": (
        "spike-yolo-ibra.yaml",
        {"kind": "IBRALIF", "D": 16.0, "N": 100},
        {"optimizer": "AdamW", "lr0": 0.002},
        "D 16 and the demo's AdamW lr0 0.002",
    ),
    "ann-lr": ("spike-yolo-ann.yaml", None, {"optimizer": "AdamW", "lr0": 0.002}, "the demo's AdamW lr0 0.002"),
}


DATASETS = {  # name: (what it is, default imgsz, n_train, n_val, scale) -- digits: the real-handwriting report's set-up
    "shapes": ("the demo data (coloured shapes)", 64, 512, 128, "n"),
    "digits": ("real handwriting (scikit-learn's UCI digits, 10 classes)", 128, 600, 200, "0.33,0.25,1024"),
}


def model_yaml(variant: str, scale: str, out: Path) -> Path:
    """Write the variant's model YAML (the shipped file with the scale fixed and the neuron replaced).

    ``scale`` is a shipped scale letter or ``depth,width,max_channels`` (a custom scale, layer 25 at ratio 1).
    """
    base, neuron, _, _ = VARIANTS[variant]
    d = yaml.safe_load((ROOT / "cfg" / base).read_text())
    if "," in scale:
        depth, width, max_channels = (float(v) for v in scale.split(","))
        d["scales"] = {"custom": [depth, width, int(max_channels)]}
        d["scale_args"] = {key: {"custom": 1} for key in d.get("scale_args", {})}
        scale = "custom"
    d["scale"] = scale
    if neuron is not None:
        d["neuron"] = {**d["neuron"], **neuron} if neuron["kind"] == d["neuron"]["kind"] else dict(neuron)
    path = out / "models" / f"ablation-{variant}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def run_one(variant: str, seed: int, data: Path, out: Path, a: argparse.Namespace) -> dict:
    """Train, score and (spiking variants) measure one variant and seed; reuse a finished result."""
    run = out / f"{variant}-seed{seed}"
    result = run / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    if run.exists():
        shutil.rmtree(run)  # an interrupted run of this benchmark: start it again from scratch
    run.mkdir(parents=True)
    model = model_yaml(variant, a.scale, out)
    train = {"model": model, "data": data, "epochs": a.epochs, "imgsz": a.imgsz, "batch": a.batch, "workers": 0,
             "device": "cpu", "seed": seed, "deterministic": True, "val": False, "plots": False,
             "project": run, "name": "train", **VARIANTS[variant][2]}  # fmt: skip
    log = (run / "log.txt").open("w")
    t = time.time()
    yolo = shutil.which("yolo", path=str(Path(sys.executable).parent)) or "yolo"
    subprocess.run(
        [yolo, "train", *(f"{k}={v}" for k, v in train.items())], check=True, env=ENV, stdout=log, stderr=log
    )
    train_s = time.time() - t
    weights = run / "train" / "weights" / "last.pt"
    scored = run / "coco_eval.json"
    subprocess.run(
        [sys.executable, "-m", "ibra_yolo", "eval", "--weights", str(weights), "--data", str(data), "--imgsz",
         str(a.imgsz), "--batch", "16", "--device", "cpu", "--no-energy", "--project", str(run), "--name", "val",
         "--out", str(scored)],
        check=True, env=ENV, stdout=log, stderr=log,
    )  # fmt: skip
    m = json.loads(scored.read_text())
    r = {"variant": variant, "seed": seed, "mAP50-95": m["mAP50-95"], "mAP50": m["mAP50"], "train_s": train_s}
    if VARIANTS[variant][0] != "spike-yolo-ann.yaml":
        subprocess.run(
            [sys.executable, "-m", "ibra_yolo", "energy", "--weights", str(weights), "--source", str(data), "--imgsz",
             str(a.imgsz), "--max-images", "64", "--out", str(run / "energy")],
            check=True, env=ENV, stdout=log, stderr=log,
        )  # fmt: skip
        r.update(range_use(json.loads((run / "energy" / "energy.json").read_text())))
    result.write_text(json.dumps(r, indent=1))
    return r


def range_use(report: dict) -> dict:
    """Clip and high-code shares over all spiking layers (weighted by neuron outputs), and the most clipped layer."""
    layers = [x for x in report["layers"] if x.get("clipped_share") is not None]
    outputs = sum(x["neuron_outputs"] for x in layers)
    worst = max(layers, key=lambda x: x["clipped_share"])
    return {
        "clip": sum(x["clipped_share"] * x["neuron_outputs"] for x in layers) / outputs,
        "high": sum(x["high_share"] * x["neuron_outputs"] for x in layers) / outputs,
        "clip_max": worst["clipped_share"],
        "clip_max_layer": worst["name"],
        "spikes_per_neuron": report["summary"]["spikes_per_neuron"],
        "energy_mJ": report["summary"]["energy_mJ"],
    }


def _stat(values: list[float]) -> str:
    half = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {half:.1f}"


def twin(variant: str) -> str:
    """The ANN twin a variant is compared with: the plain ReLU model trained with the same ``yolo train`` arguments
    (``ann`` for the stock defaults, ``ann-lr`` for the demo's recipe), so a ratio compares networks, not recipes."""
    args = VARIANTS[variant][2]
    return next(
        v for v, (yaml, neuron, a, _) in VARIANTS.items() if yaml == "spike-yolo-ann.yaml" and not neuron and a == args
    )


def table(results: dict[str, list[dict]]) -> str:
    means = {v: statistics.mean(r["mAP50-95"] for r in rs) for v, rs in results.items() if rs}
    head = ["variant", "question", "mAP@50:95 (%)", "per seed (seeds)", "× ANN twin", "mAP@50 (%)", "clip%",
            "max clip% (layer)", "hi%", "spikes/neuron"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, rs in results.items():
        m = [100 * r["mAP50-95"] for r in rs]
        ref = means.get(twin(variant))
        ratio = f"{statistics.mean(m) / 100 / ref:.2f}" if ref else "-"
        spiking = "clip" in rs[0]

        def mean(key: str, rs=rs) -> float:
            return statistics.mean(r[key] for r in rs)

        worst = max(rs, key=lambda r: r["clip_max"]) if spiking else None
        cells = [
            variant, VARIANTS[variant][3], _stat(m),
            " / ".join(f"{x:.1f}" for x in m) + f" ({', '.join(str(r['seed']) for r in rs)})", ratio,
            _stat([100 * r["mAP50"] for r in rs]),
            f"{100 * mean('clip'):.2f}" if spiking else "-",
            f"{100 * worst['clip_max']:.1f} ({worst['clip_max_layer'].removeprefix('model.')})" if spiking else "-",
            f"{100 * mean('high'):.1f}" if spiking else "-",
            f"{mean('spikes_per_neuron'):.2f}" if spiking else "-",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _kernels(pinned: dict[str, str]) -> str:
    return "CPU kernels " + ("pinned: " + " ".join(f"{k}={v}" for k, v in pinned.items()) if pinned else "not pinned")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=list(DATASETS), default="shapes", help="shapes (demo data) or digits")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--imgsz", type=int, help="default: 64 (shapes), 128 (digits)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--scale", help="n/s/m/l or depth,width,max_channels; default n (shapes), 0.33,0.25,1024 (digits)")
    p.add_argument("--n-train", type=int, help="default: 512 (shapes), 600 (digits)")
    p.add_argument("--n-val", type=int, help="default: 128 (shapes), 200 (digits)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one CPU thread each)")
    p.add_argument("--out", default="runs/ablation-benchmark", help="working folder; finished runs are reused")
    p.add_argument("--readme", help="also rewrite the ablation section of this README (between its markers)")
    p.add_argument("--section", help="the README section's marker name; default ablation-<dataset>")
    p.add_argument("--report", action="store_true", help="train nothing: tabulate the finished runs in --out")
    a = p.parse_args(argv)

    what, *defaults = DATASETS[a.dataset]
    for key, value in zip(("imgsz", "n_train", "n_val", "scale"), defaults):
        setattr(a, key, value if getattr(a, key) is None else getattr(a, key))
    out = Path(a.out).resolve()
    settings = {k: getattr(a, k) for k in ("dataset", "epochs", "imgsz", "batch", "scale", "n_train", "n_val")}
    settings["kernels"] = {k: ENV[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in ENV}
    stamp = out / "settings.json"
    if a.report and stamp.is_file():  # nothing is trained: the table states the kernels the runs were made with
        settings["kernels"] = json.loads(stamp.read_text()).get("kernels", {})
    if stamp.is_file() and {"kernels": {}, **json.loads(stamp.read_text())} != settings:  # older folders: unpinned
        raise SystemExit(f"error: {out} holds runs made with other settings ({stamp}): choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(settings))
    if a.dataset == "digits":
        from benchmarks.digits import make_digits_dataset

        data = make_digits_dataset(out / "data", a.n_train, a.n_val, a.imgsz, seed=0)
    else:
        from ibra_yolo.data import make_shapes_dataset

        data = make_shapes_dataset(out / "data", a.n_train, a.n_val, a.imgsz, seed=0)
    jobs = [(v, s) for s in a.seeds for v in a.variants]  # seed by seed: every variant of seed 0 first
    if a.report:  # only the runs that finished (each row then says how many seeds it has)
        jobs = [(v, s) for v, s in jobs if (out / f"{v}-seed{s}" / "result.json").is_file()]
    results: dict[str, list[dict]] = {v: [] for v in a.variants if any(job[0] == v for job in jobs)}
    with ThreadPoolExecutor(a.jobs) as pool:
        for (v, s), r in zip(jobs, pool.map(lambda job: run_one(*job, data, out, a), jobs)):
            results[v].append(r)
            print(f"{v:12s} seed {s}: mAP@50:95 {100 * r['mAP50-95']:.1f}  mAP@50 {100 * r['mAP50']:.1f}  "
                  f"train {r['train_s'] / 60:.1f} min", flush=True)  # fmt: skip
    md = (
        f"\n### Ablations on {what} ({date.today()}; scale {a.scale}, {a.epochs} epochs at {a.imgsz} px, batch "
        f"{a.batch}, {a.n_train} train / {a.n_val} val images, seeds {', '.join(map(str, a.seeds))}; "
        f"{_kernels(settings['kernels'])}; stock "
        f"Ultralytics training defaults unless the row says otherwise; pycocotools)\n\n"
        + table(results)
        + "\n\n± is half the seed spread (max − min) / 2; × ANN twin is the ratio of the means to the ANN twin trained "
        "with the same arguments (`ann` for the stock defaults, `ann-lr` for the recipe rows). clip% / hi%: share of "
        "membrane values at the top code M / in the upper half of the range, over all spiking layers (64 val images, "
        "mean over seeds); max clip%: the most clipped layer (worst seed)."
    )
    print(md)
    (out / "ablation.json").write_text(json.dumps(results, indent=1))
    if a.readme:
        write_readme_section(md, a.readme, a.section or f"ablation-{a.dataset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
