"""``ibra-yolo energy``: energy, spike statistics and range use of an ibra-yolo model, measured on images.

Prints the per-layer table and the totals, and writes ``energy.json``, ``energy_layers.csv`` and ``energy.png`` into
``--out`` (never replacing existing files without ``--overwrite``). Runs offline.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ibra_yolo.cli.parser import ArgumentParser, positive_int, run_command
from ibra_yolo.errors import IbraYoloError, one_line
from ibra_yolo.limits import MAX_IMGSZ

__all__ = ("build_parser", "main")

EXAMPLES = """\
examples:
  ibra-yolo energy --weights best.pt --source coco.yaml --imgsz 640 --max-images 500
  ibra-yolo energy --weights spike-yolo-ibra-n.yaml --source images/ --imgsz 320 --preset 45nm-int8
  ibra-yolo energy --weights best.pt --source images/ --spike-driven --e-mac 3.1 --e-ac 0.1 --out runs/e2

--source: a data YAML means its val split, found as `yolo val data=...` finds it (coco.yaml works by name);
a folder, image, glob or .txt list is read as `yolo predict source=...` reads it.
"""


def _picojoules(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is invalid: energy must be a positive number of picojoules")
    return value


def build_parser() -> ArgumentParser:
    """The command line of ``ibra-yolo energy``."""
    from ibra_yolo.energy.presets import DEFAULT_PRESET, PRESETS

    p = ArgumentParser(
        prog="ibra-yolo energy",
        description=__doc__.split("\n\n")[1],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--weights", required=True, help="trained checkpoint (.pt) or model YAML (untrained, for counting)")
    p.add_argument("--source", required=True, help="image folder, image, .txt list, or data YAML (its val split)")
    p.add_argument("--imgsz", type=positive_int(32, 32, MAX_IMGSZ), default=640, help="square input size (default 640)")
    p.add_argument("--batch", type=positive_int(1), default=8, help="images per forward pass (default 8)")
    p.add_argument("--max-images", type=positive_int(1), default=None, help="use at most N images")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=DEFAULT_PRESET,
        help=f"energy constants (default {DEFAULT_PRESET}: E_MAC 4.6 pJ, E_AC 0.9 pJ, Horowitz 2014)",
    )
    p.add_argument("--e-mac", type=_picojoules, default=None, help="custom MAC energy in pJ (replaces the preset's)")
    p.add_argument("--e-ac", type=_picojoules, default=None, help="custom AC energy in pJ (replaces the preset's)")
    p.add_argument("--spike-driven", action="store_true", help="count spikes on the {0,1} planes of spike-driven mode")
    p.add_argument("--device", default=None, help="Ultralytics device: cpu, 0, cuda:1 ... (default: cpu)")
    p.add_argument("--out", default="runs/energy", help="folder for energy.json, energy_layers.csv, energy.png")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


def run(args: argparse.Namespace) -> int:
    """Measure, print the table and write the files; raises ``IbraYoloError`` on bad input."""
    from ibra_yolo.energy import energy_constants, load_model, measure, output_paths
    from ibra_yolo.sources import list_images, select_device

    energy_constants(args.preset, args.e_mac, args.e_ac)  # every argument is checked before the model is read
    if args.device is not None:
        select_device(args.device)
    output_paths(args.out, overwrite=args.overwrite)  # fail before the (long) measurement, not after it
    images = list_images(args.source)  # likewise for a missing or empty source
    inputs = [*images, args.weights]
    output_paths(args.out, overwrite=args.overwrite, inputs=inputs)  # an image may be named energy.png: never replaced
    if Path(args.out).resolve() in {Path(image).resolve().parent for image in images}:
        raise IbraYoloError(
            f"--out {args.out} is a folder of the measured images: energy.png would be measured as an image by the "
            f"next run on it; choose another --out"
        )
    report = measure(
        load_model(args.weights),
        args.source,
        imgsz=args.imgsz,
        batch=args.batch,
        spike_driven=args.spike_driven,
        preset=args.preset,
        e_mac=args.e_mac,
        e_ac=args.e_ac,
        max_images=args.max_images,
        device=args.device,
        name=str(args.weights),
    )
    print(report.table())
    paths = report.save(args.out, overwrite=args.overwrite, inputs=inputs)
    print(one_line("wrote " + ", ".join(str(p) for p in paths.values())))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``ibra-yolo energy``; returns the exit status (0, or 2 after a one-line ``error:`` message)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported: this command never downloads
    return run_command(build_parser(), run, argv)
