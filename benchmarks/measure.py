"""What energy counting costs: ``ibra_yolo.measure`` against one plain forward pass, side by side.

For each model, three runners take turns (interleaved, medians): a plain eval-mode forward under ``torch.no_grad``;
the same forward with an ``EnergyMeter`` attached (hooks only); and a whole ``measure()`` call on the same tensor
(hooks, mode switching, the report). Ratios are to the plain forward of the same model, measured in the same run,
in wall time and in the process's CPU time (all threads; steadier than wall time on a machine shared with others).

Usage (from the repository root):
    python -m benchmarks.measure                       # n scale, 640 px, batch 1, CPU
    python -m benchmarks.measure --quick               # a smoke run (few repetitions, 128 px)
    python -m benchmarks.measure --readme README.md    # and regenerate the README's table
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from benchmarks.common import VARIANTS, build, environment, interleaved, sync, table, write_readme_section


class Runner:
    """Times ``run()``: ``step()`` returns the wall seconds and keeps the process CPU seconds in ``cpu``."""

    def __init__(self, model, x):
        self.model, self.x, self.cpu = model, x, []

    def step(self) -> float:
        sync(self.x.device)
        t, c = time.perf_counter(), time.process_time()
        self.run()
        sync(self.x.device)
        self.cpu.append(time.process_time() - c)
        return time.perf_counter() - t


class Forward(Runner):
    """One eval-mode forward of ``model`` on ``x``."""

    @torch.no_grad()
    def run(self) -> None:
        self.model(self.x)


class MeteredForward(Runner):
    """The same forward inside an attached ``EnergyMeter`` (the hooks' cost alone)."""

    @torch.no_grad()
    def run(self) -> None:
        from ibra_yolo.energy import EnergyMeter

        with EnergyMeter(self.model):
            self.model(self.x)


class Measure(Runner):
    """One ``measure(model, x)`` call: the whole measurement of one batch, report included."""

    def run(self) -> None:
        from ibra_yolo.energy import measure

        measure(self.model, self.x, batch=len(self.x), progress=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, or a CUDA index such as 0")
    p.add_argument("--scale", default="n", help="model scale (n, s, m, l)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--families", nargs="+", default=["IBRA-LIF", "I-LIF", "ANN twin"], choices=list(VARIANTS))
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions per runner")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--readme", help="also rewrite the measure section of this README (between its markers)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 repetitions at 128 px")
    a = p.parse_args(argv)
    if a.quick:
        a.imgsz, a.reps, a.warmup = 128, 2, 1
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cpu" if a.device == "cpu" else f"cuda:{a.device}")
    x = torch.rand(a.batch, 3, a.imgsz, a.imgsz, generator=torch.Generator().manual_seed(0)).to(device)
    runners = {}
    for name in a.families:
        model = build(VARIANTS[name], a.scale, device).eval()
        runners[(name, "forward")] = Forward(model, x)
        runners[(name, "forward + meter")] = MeteredForward(model, x)
        runners[(name, "measure()")] = Measure(model, x)
    wall = interleaved(runners, a.reps, a.warmup)
    cpu = {k: statistics.median(r.cpu[a.warmup :]) for k, r in runners.items()}
    rows = []
    for name in a.families:
        (w0, w1, w2), (c0, c1, c2) = ([t[(name, k)] for k in ("forward", "forward + meter", "measure()")]
                                      for t in (wall, cpu))  # fmt: skip
        rows.append((name, f"{w0 * 1e3:.0f}", f"{w1 * 1e3:.0f}", f"{w1 / w0:.2f}", f"{w2 * 1e3:.0f}", f"{w2 / w0:.2f}",
                     f"{c1 / c0:.2f}", f"{c2 / c0:.2f}"))  # fmt: skip
    env = environment(device, scale=a.scale)
    md = f"\n### Cost of `measure` ({a.imgsz} px, batch {a.batch}, integer mode) — {env}\n\n" + table(
        ["model", "forward ms", "forward + meter ms", "× forward", "measure() ms", "× forward",
         "CPU time × forward: meter", "measure()"], rows
    )  # fmt: skip
    print(md)
    if a.readme:
        write_readme_section(md, a.readme, "measure-benchmark")
    if a.json:
        with open(a.json, "w") as f:
            seconds = {" / ".join(k): {"wall": wall[k], "cpu": cpu[k]} for k in runners}
            json.dump({"env": env, "seconds": seconds}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
