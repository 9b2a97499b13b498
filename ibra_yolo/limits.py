"""Sizes beyond which an input is a typo, not an image: refused with one line before anything is allocated.

Imports nothing, so that the command-line tools can check their arguments without importing torch.
"""

__all__ = ("MAX_IMGSZ", "MAX_DEMO_IMAGES")

MAX_IMGSZ = 8192  # the largest image size our tools take: a 16k square would need tens of GB in the first layer alone
MAX_DEMO_IMAGES = 100_000  # images per split of the generated demo dataset (1e9 filled the disk)
