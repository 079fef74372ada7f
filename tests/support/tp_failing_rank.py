"""`torchrun ... tests/support/tp_failing_rank.py ARGS`: `stepscope ARGS` where the last rank's session
fails in its third step (tests/tracer/test_tensor_parallel.py checks how every rank ends)."""

from __future__ import annotations

import os
import sys

from stepscope.cli.main import main
from stepscope.tracer.session import LiveSession

FAIL_AT = 2


def failing_step(self, _step=LiveSession.step):
    if self.steps_started == FAIL_AT:
        raise RuntimeError("injected failure on the last rank")
    return _step(self)


if __name__ == "__main__":
    if int(os.environ["RANK"]) == int(os.environ["WORLD_SIZE"]) - 1:
        LiveSession.step = failing_step
    sys.exit(main(sys.argv[1:]))
