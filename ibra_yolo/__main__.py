"""``python -m ibra_yolo``: the ``ibra-yolo`` command (see ``ibra_yolo.cli``)."""

import sys

from ibra_yolo.cli import main

if __name__ == "__main__":
    sys.exit(main())
