"""``ibra-yolo models``: the versions, where the model YAMLs are and which model names the stock CLI accepts."""

from __future__ import annotations

import argparse

from ibra_yolo.cli.parser import ArgumentParser, run_command

__all__ = ("build_parser", "main", "describe")


def build_parser() -> ArgumentParser:
    """The command line of ``ibra-yolo models`` (no arguments)."""
    return ArgumentParser(prog="ibra-yolo models", description=__doc__.split(": ", 1)[1])


def describe() -> str:
    """The versions, the YAML folder, the model names for ``yolo ... model=<name>`` and the training recipe."""
    import torch
    import ultralytics

    import ibra_yolo
    from ibra_yolo.plugin import available_models, cfg_dir

    lines = [
        f"ibra-yolo {ibra_yolo.__version__} (ultralytics {ultralytics.__version__}, torch {torch.__version__})",
        f"model YAMLs and recipes: {cfg_dir()}",
        "model names for `yolo ... model=<name>`:",
        *(f"  {name}" for name in available_models()),
        f"training recipe: yolo train cfg={cfg_dir() / 'train-coco-recipe.yaml'} model=spike-yolo-ibra.yaml ...",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print ``describe()``; returns 0 (2 after a one-line ``error:`` for an unexpected argument)."""

    def body(args: argparse.Namespace) -> int:
        print(describe())
        return 0

    return run_command(build_parser(), body, argv)
