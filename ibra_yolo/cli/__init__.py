"""The ``ibra-yolo`` command (also ``python -m ibra_yolo``): one entry point, one subcommand per job.

``ibra-yolo <command> [args]`` runs ``main(args)`` of the command's module. Each command module has
``main(argv=None) -> int`` and reports bad input as one ``error: ...`` line with exit status 2
(``ibra_yolo.cli.parser``). A new command is one entry in ``COMMANDS``: its name, its module and a one-line summary.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ("COMMANDS", "main")

COMMANDS: dict[str, tuple[str, str]] = {  # name -> (module with main(argv) -> int, one-line summary)
    "models": ("ibra_yolo.cli.models", "versions, the model YAMLs and the names `yolo ... model=` accepts"),
    "demo": ("ibra_yolo.cli.demo", "the main job: demo data -> stock `yolo train` -> COCO mAP (offline, ~10 min)"),
    "eval": ("ibra_yolo.cli.eval", "COCO mAP@50:95 with pycocotools of a checkpoint or a predictions file"),
    "energy": ("ibra_yolo.cli.energy", "energy, spikes and range use per layer, measured on images"),
    "convert-spikeyolo": ("ibra_yolo.cli.convert_spikeyolo", "SpikeYOLO's released checkpoint as one of ours"),
    "deploy": ("ibra_yolo.cli.deploy", "fold BN, RepConv and SepRep exactly: a checkpoint for predict/val/export"),
}


def usage() -> str:
    """The list of commands."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: ibra-yolo <command> [options]   (python -m ibra_yolo <command> ...; <command> --help for more)",
        "",
    ]
    lines += ["commands:", *(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``ibra-yolo``: without a command, print what the plugin provides and the commands.

    Returns:
        (int): The command's exit status; 2 (after one ``error:`` line on stderr) for an unknown command.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        from ibra_yolo.cli.models import describe

        print(describe())
        print()
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name in ("-h", "--help"):
        print(usage())
        return 0
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}: choose one of {', '.join(COMMANDS)} (see ibra-yolo --help)",
              file=sys.stderr)  # fmt: skip
        return 2
    return importlib.import_module(COMMANDS[name][0]).main(rest)
