"""``python -m ibra_yolo``: where the model YAMLs are, which model names the stock CLI accepts, and the versions.

``python -m ibra_yolo convert-spikeyolo SRC DST`` converts a SpikeYOLO checkpoint (see ``ibra_yolo.cli``).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["convert-spikeyolo"]:
        from ibra_yolo.cli.convert_spikeyolo import main as convert_spikeyolo

        return convert_spikeyolo(argv[1:])
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
