"""Sizes beyond which an input is a typo, not an image: refused with one line before anything is allocated.

Imports nothing, so that the command-line tools can check their arguments without importing torch.
"""

__all__ = ("MAX_IMGSZ",)

MAX_IMGSZ = 8192  # the largest image size our tools take: a 16k square would need tens of GB in the first layer alone
