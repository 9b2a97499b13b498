"""Energy, spike statistics and range use of an ibra-yolo model, measured on images (see ``ibra_yolo.energy``).

Prints the per-layer table and the totals, and writes ``energy.json``, ``energy_layers.csv`` and ``energy.png`` into
``--out`` (never replacing existing files without ``--overwrite``). Runs offline.

Examples:
    python tools/energy.py --weights best.pt --source coco.yaml --imgsz 640 --max-images 500
    python tools/energy.py --weights spike-yolo-ibra-n.yaml --source images/ --imgsz 320 --preset 45nm-int8
    python tools/energy.py --weights best.pt --source images/ --spike-driven --e-mac 3.1 --e-ac 0.1 --out runs/e2
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported: this tool never downloads anything

from ibra_yolo.energy import DEFAULT_PRESET, PRESETS, list_images, load_model, measure, output_paths  # noqa: E402
from ibra_yolo.errors import IbraYoloError  # noqa: E402

__all__ = ("parse_args", "main")


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (``error: ...``) and exit status 2, without the usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def _int_at_least(minimum: int, multiple: int = 1):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum or value % multiple:
            extra = f" and a multiple of {multiple}" if multiple > 1 else ""
            raise argparse.ArgumentTypeError(f"{value} is invalid: it must be >= {minimum}{extra}")
        return value

    return parse


def _picojoules(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is invalid: energy must be a positive number of picojoules")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="trained checkpoint (.pt) or model YAML (untrained, for counting)")
    p.add_argument("--source", required=True, help="image folder, image, .txt list, or data YAML (its val split)")
    p.add_argument("--imgsz", type=_int_at_least(32, 32), default=640, help="square input size (default 640)")
    p.add_argument("--batch", type=_int_at_least(1), default=8, help="images per forward pass (default 8)")
    p.add_argument("--max-images", type=_int_at_least(1), default=None, help="use at most N images")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=DEFAULT_PRESET,
        help=f"energy constants (default {DEFAULT_PRESET}: E_MAC 4.6 pJ, E_AC 0.9 pJ, Horowitz 2014)",
    )
    p.add_argument("--e-mac", type=_picojoules, default=None, help="custom MAC energy in pJ (replaces the preset's)")
    p.add_argument("--e-ac", type=_picojoules, default=None, help="custom AC energy in pJ (replaces the preset's)")
    p.add_argument("--spike-driven", action="store_true", help="count spikes on the {0,1} planes of spike-driven mode")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    p.add_argument("--out", default="runs/energy", help="folder for energy.json, energy_layers.csv, energy.png")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; returns the exit status (0, or 2 with a one-line ``error:`` message)."""
    args = parse_args(argv)
    try:
        output_paths(args.out, overwrite=args.overwrite)  # fail before the (long) measurement, not after it
        list_images(args.source)  # likewise for a missing or empty source
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
        paths = report.save(args.out, overwrite=args.overwrite)
    except IbraYoloError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
