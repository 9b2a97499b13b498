"""``python -m ibra_yolo convert-spikeyolo SRC DST``: SpikeYOLO's checkpoint as a normal Ultralytics checkpoint of ours.

The source is read without running any of its code; every tensor is checked onto our model of the same scale. The
output is written atomically and never replaces an existing file without ``--overwrite``.

Examples:
    python -m ibra_yolo convert-spikeyolo 69M_best.pt spike-yolo-ilif-l.pt
    python -m ibra_yolo convert-spikeyolo 69M_best.pt spike-yolo-ibra-l-init.pt --neuron ibra
    python -m ibra_yolo convert-spikeyolo 23M_best.pt s.pt --neuron "{kind: IBRALIF, D: 5.11, N: 100}"
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ("parse_args", "main")


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (``error: ...``) and exit status 2, without the usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = _Parser(
        prog="python -m ibra_yolo convert-spikeyolo",
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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Convert; returns the exit status (0, or 2 with a one-line ``error:`` message)."""
    args = parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported: converting never downloads anything
    from ibra_yolo.errors import IbraYoloError
    from ibra_yolo.spikeyolo import convert_spikeyolo

    try:
        dst = convert_spikeyolo(args.src, args.dst, neuron=args.neuron, overwrite=args.overwrite)
    except IbraYoloError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {dst}; e.g. yolo val model={dst} data=coco.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
