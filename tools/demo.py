"""`python tools/demo.py ...` is `ibra-yolo demo ...` (`ibra_yolo.cli.demo`); kept for documented commands."""

import sys

from ibra_yolo.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
