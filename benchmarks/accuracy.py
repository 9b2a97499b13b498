"""Accuracy of IBRA-LIF, I-LIF, IB-LIF and the ANN twin on the embedded demo data, same budget, several seeds.

Each variant is trained with the stock ``yolo train`` exactly as ``ibra-yolo demo`` trains IBRA-LIF (same data,
epochs, image size and optimizer settings; only the model YAML and the training seed change) and scored with
``ibra-yolo eval`` (pycocotools). Runs are interleaved seed by seed (seed 0 of every variant, then seed 1, ...).
The table reports the mean over seeds and the seed spread (max - min).

Usage (from the repository root):
    python -m benchmarks.accuracy                        # demo budget (8 epochs), seeds 0 and 1: ~80 min on 2 CPUs
    python -m benchmarks.accuracy --epochs 2 --seeds 0   # a quick look
    python -m benchmarks.accuracy --readme README.md     # and regenerate the README's accuracy table
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from benchmarks.common import VARIANTS, table, write_readme_section
from ibra_yolo.cli import demo  # the demo's data and training settings


def train_and_score(family: str, seed: int, data: Path, out: Path, a: argparse.Namespace) -> dict:
    """Train one variant with the demo's settings and return its COCO metrics and wall time."""
    run = out / f"{family}-seed{seed}"
    args = argparse.Namespace(model=f"spike-yolo-{family}-n.yaml", epochs=a.epochs, imgsz=a.imgsz, batch=a.batch,
                              device=a.device, yolo_arg=[f"seed={seed}", "val=False"])  # fmt: skip
    cmd = demo.train_command(args, data, run)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    train_s = time.time() - t
    weights = run / "runs" / "train" / "weights" / "last.pt"
    result = run / "coco_eval.json"
    subprocess.run(
        [sys.executable, "-m", "ibra_yolo", "eval", "--weights", str(weights), "--data", str(data),
         "--imgsz", str(a.imgsz), "--batch", str(a.batch), "--device", a.device, "--no-energy",
         "--project", str(run / "runs"), "--name", "val", "--out", str(result), "--overwrite"],
        check=True, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    m = json.loads(result.read_text())
    return {"mAP50-95": m["mAP50-95"], "mAP50": m["mAP50"], "train_s": train_s}


def spread(values: list[float]) -> float:
    return max(values) - min(values) if len(values) > 1 else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/accuracy-benchmark", help="working folder (created; reused if it exists)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    p.add_argument("--epochs", type=int, default=demo.DEFAULTS["epochs"])
    p.add_argument("--imgsz", type=int, default=demo.DEFAULTS["imgsz"])
    p.add_argument("--n-train", type=int, default=demo.DEFAULTS["n_train"])
    p.add_argument("--n-val", type=int, default=demo.DEFAULTS["n_val"])
    p.add_argument("--batch", type=int, default=demo.DEFAULTS["batch"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--readme", help="also rewrite the accuracy section of this README (between its markers)")
    a = p.parse_args(argv)

    from ibra_yolo.data import make_shapes_dataset

    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = make_shapes_dataset(out / "data", a.n_train, a.n_val, a.imgsz, seed=0)
    results = {v: [] for v in VARIANTS}
    for seed in a.seeds:
        for variant, family in VARIANTS.items():
            r = train_and_score(family, seed, data, out, a)
            results[variant].append(r)
            print(f"seed {seed} {variant:9s} mAP@50:95 {100 * r['mAP50-95']:.1f}  mAP@50 {100 * r['mAP50']:.1f}  "
                  f"train {r['train_s'] / 60:.1f} min", flush=True)  # fmt: skip

    rows = []
    for variant, rs in results.items():
        m, m50 = [r["mAP50-95"] * 100 for r in rs], [r["mAP50"] * 100 for r in rs]
        rows.append((variant, f"{statistics.mean(m):.1f} ± {spread(m) / 2:.1f}",
                     f"{statistics.mean(m50):.1f} ± {spread(m50) / 2:.1f}", " / ".join(f"{x:.1f}" for x in m),
                     f"{statistics.mean(r['train_s'] for r in rs) / 60:.1f}"))  # fmt: skip
    md = (
        f"\n### Accuracy on the demo data ({date.today()}; n scale, {a.epochs} epochs at {a.imgsz} px, "
        f"{a.n_train} train / {a.n_val} val images, seeds {', '.join(map(str, a.seeds))}; pycocotools)\n\n"
        + table(["variant", "mAP@50:95 (%)", "mAP@50 (%)", "mAP@50:95 per seed", "train min"], rows)
        + "\n\n± is half the seed spread (max − min) / 2."
    )
    print(md)
    (out / "accuracy.json").write_text(json.dumps(results, indent=2))
    if a.readme:
        write_readme_section(md, a.readme, "accuracy-benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())
