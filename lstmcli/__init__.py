"""lstmcli: train, evaluate, diagnose and serve recurrent-network sentiment classifiers."""

import os

# OpenMP reads this once, when torch loads it, so it is set before any module can import torch:
# waiting threads sleep instead of spinning, which keeps a busy neighbour on a small machine from
# stalling every parallel region (see lstmcli.device). A value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
