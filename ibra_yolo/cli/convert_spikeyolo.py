"""``ibra-yolo convert-spikeyolo SRC DST``: SpikeYOLO's checkpoint as a normal Ultralytics checkpoint of ours.

The source is read without running any of its code; every tensor is checked onto our model of the same scale. The
output is written atomically and never replaces an existing file without ``--overwrite``.

Examples:
    ibra-yolo convert-spikeyolo 69M_best.pt spike-yolo-ilif-l.pt
    ibra-yolo convert-spikeyolo 69M_best.pt spike-yolo-ibra-l-init.pt --neuron ibra
    ibra-yolo convert-spikeyolo 23M_best.pt s.pt --neuron "{kind: IBRALIF, D: 5.11, N: 100}"
"""

from __future__ import annotations

import argparse
import os

from ibra_yolo.cli.parser import ArgumentParser, run_command
from ibra_yolo.errors import one_line

__all__ = ("build_parser", "parse_args", "main")


def build_parser() -> ArgumentParser:
    """The command line of ``ibra-yolo convert-spikeyolo``."""
    p = ArgumentParser(
        prog="ibra-yolo convert-spikeyolo",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="SpikeYOLO checkpoint (.pt), e.g. its released 69M_best.pt")
    p.add_argument("dst", help="output checkpoint (.pt) of our model")
    p.add_argument(
        "--neuron",
        default=None,
        help="neuron to run instead of the trained I-LIF: ibra, ilif, iblif (as in our YAMLs) or a YAML mapping, "
        "e.g. '{kind: IBRALIF, D: 5.11, N: 100}' (the weights load unchanged)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; raises ``UsageError`` on bad arguments."""
    return build_parser().parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """Convert; raises ``IbraYoloError`` on bad input."""
    from ibra_yolo.spikeyolo import convert_spikeyolo

    dst = convert_spikeyolo(args.src, args.dst, neuron=args.neuron, overwrite=args.overwrite)
    print(one_line(f"wrote {dst}; e.g. yolo val model={dst} data=coco.yaml"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``ibra-yolo convert-spikeyolo``; returns the exit status (0, or 2 after a one-line ``error:`` message)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported: converting never downloads anything
    return run_command(build_parser(), run, argv)
