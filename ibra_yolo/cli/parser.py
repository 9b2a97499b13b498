"""What every ``ibra-yolo`` command shares: one way to report bad input.

An argument error, an ``IbraYoloError`` or a file-system error (``OSError``: permission denied, a folder where a
file is expected, ...) is one line on stderr, ``error: ...``, and exit status 2 (no usage block, no traceback);
``--help`` prints the help and returns 0. A command module builds its parser with ``ArgumentParser`` and hands its
body to ``run_command``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from ibra_yolo.errors import IbraYoloError, one_line

__all__ = ("ArgumentParser", "UsageError", "run_command", "positive_int", "unit_interval")


class UsageError(IbraYoloError):
    """A bad command line (unknown option, missing or invalid value)."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors raise ``UsageError`` instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(f"{message} (see --help)")


def run_command(parser: ArgumentParser, body: Callable[[argparse.Namespace], int], argv: list[str] | None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run ``body(args)``; report bad input as one line.

    Args:
        parser (ArgumentParser): The command's parser.
        body (Callable): The command; returns its exit status and may raise ``IbraYoloError``.
        argv (list[str] | None): The arguments.

    Returns:
        (int): ``body``'s exit status, 0 after ``--help``, or 2 after printing ``error: <message>`` on stderr (for an
            ``IbraYoloError``, a usage error or an ``OSError``), 130 after Ctrl-C (one line, no traceback).
    """
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help (and --version): argparse printed what was asked and exits
            return e.code if isinstance(e.code, int) else 0
        given = {k: v for k, v in vars(args).items() if v != parser.get_default(k)}  # --device '' is its default
        empty = next((k for k, v in given.items() if isinstance(v, str) and not v.strip()), None)
        if empty:  # --out '' wrote into the current folder instead of the default; '' names no file or value
            raise UsageError(f"--{empty.replace('_', '-')} is empty: give it a value, or leave the option out")
        return body(args)
    except IbraYoloError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file system that refuses (permission, a folder where a file is expected, a full disk)
        from ibra_yolo.files import describe_os_error

        print(f"error: {one_line(describe_os_error(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not the traceback of wherever torch was when it came
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


def unit_interval(text: str) -> float:
    """An argparse ``type`` for a finite number in ``[0, 1]`` (a threshold such as ``--conf`` or ``--iou``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise argparse.ArgumentTypeError(f"{text} is invalid: it must be a number in [0, 1]")
    return value


def positive_int(minimum: int = 1, multiple: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for integers ``>= minimum`` (and multiples of ``multiple``, ``<= maximum``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum or value % multiple or (maximum is not None and value > maximum):
            extra = f" and a multiple of {multiple}" if multiple > 1 else ""
            extra += f" and <= {maximum}" if maximum is not None else ""
            raise argparse.ArgumentTypeError(f"{value} is invalid: it must be >= {minimum}{extra}")
        return value

    return parse
