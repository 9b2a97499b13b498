"""``ibra-yolo deploy SRC DST``: the deployed form of a checkpoint, for the stock ``yolo predict / val / export``.

Every BN, RepConv and SepRep is folded exactly (``ibra_yolo.deploy``): each spiking layer becomes ``neuron -> one
conv (bias)``. The output is written atomically and never replaces an existing file without ``--overwrite``; the
deployed model cannot be trained further (train from SRC).

Examples:
    ibra-yolo deploy runs/detect/train/weights/best.pt best-deploy.pt
    ibra-yolo deploy best.pt best-spikes.pt --spike-driven
    yolo predict model=best-spikes.pt source=bus.jpg
"""

from __future__ import annotations

import argparse
import os

from ibra_yolo.cli.parser import ArgumentParser, run_command
from ibra_yolo.errors import one_line

__all__ = ("build_parser", "main")


def build_parser() -> ArgumentParser:
    """The command line of ``ibra-yolo deploy``."""
    p = ArgumentParser(
        prog="ibra-yolo deploy",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="Ultralytics checkpoint (.pt) of a spiking model, e.g. best.pt")
    p.add_argument("dst", help="output checkpoint (.pt)")
    p.add_argument("--spike-driven", action="store_true", help="store it in spike-driven mode ({0, 1} planes)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def run(args: argparse.Namespace) -> int:
    """Deploy; raises ``IbraYoloError`` on bad input."""
    from ibra_yolo.deployment import deploy_checkpoint

    dst = deploy_checkpoint(args.src, args.dst, spike_driven=args.spike_driven, overwrite=args.overwrite)
    mode = "spike-driven" if args.spike_driven else "integer"
    print(one_line(f"wrote {dst} ({mode} mode); e.g. yolo predict model={dst}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``ibra-yolo deploy``; returns the exit status (0, or 2 after a one-line ``error:`` message)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported: deploying never downloads anything
    return run_command(build_parser(), run, argv)
