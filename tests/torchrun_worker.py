"""`lstm ARGS` for torchrun, in which rank 1 alone asks to stop after its STOP_AFTER-th question
(one question before each epoch and after each optimiser step), as if only it had caught a
signal: every process must still stop after the same step (tests/test_distributed.py).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/torchrun_worker.py \\
        train ...
"""

from __future__ import annotations

import os

from lstmcli.cli import main
from lstmcli.training import resume

LIMIT = int(os.environ.get("STOP_AFTER", "0"))


class RankOneStops(resume.StopFlag):
    asked = 0

    def __call__(self) -> bool:
        if os.environ.get("RANK") == "1":
            RankOneStops.asked += 1
            return RankOneStops.asked > LIMIT
        return super().__call__()


if __name__ == "__main__":
    resume.StopFlag = RankOneStops  # type: ignore[misc]  # what stop_on_signals builds
    main()
