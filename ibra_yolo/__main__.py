"""``python -m ibra_yolo``: where the model YAMLs are, which model names the stock CLI accepts, and the versions."""

from __future__ import annotations

import sys


def main() -> int:
    import torch
    import ultralytics

    import ibra_yolo
    from ibra_yolo.plugin import available_models, cfg_dir

    print(f"ibra-yolo {ibra_yolo.__version__} (ultralytics {ultralytics.__version__}, torch {torch.__version__})")
    print(f"model YAMLs and recipes: {cfg_dir()}")
    print("model names for `yolo ... model=<name>`:")
    for name in available_models():
        print(f"  {name}")
    print(f"training recipe: yolo train cfg={cfg_dir() / 'train-coco-recipe.yaml'} model=spike-yolo-ibra.yaml ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
