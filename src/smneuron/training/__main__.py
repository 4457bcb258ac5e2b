"""``python -m smneuron.training``: the per-process worker torchrun starts (same as ``train``)."""

import sys

from smneuron.training.entry import main

if __name__ == "__main__":
    sys.exit(main())
