"""`python tools/energy.py ...` is `ibra-yolo energy ...` (`ibra_yolo.cli.energy`); kept for documented commands."""

import sys

from ibra_yolo.cli.energy import main

if __name__ == "__main__":
    sys.exit(main())
