"""`python tools/eval_coco.py ...` is `ibra-yolo eval ...` (`ibra_yolo.cli.eval`); kept for documented commands."""

import sys

from ibra_yolo.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
