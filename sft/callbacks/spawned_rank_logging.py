"""The run's logging in the processes `ddp_spawn` starts for its ranks.

Hydra sets up the run's logging (the console's format, `train.log`) in the process it runs the
job in. `ddp_spawn` (trainer=ddp_sim) trains in new processes, which unpickle the Trainer and
start with Python's defaults: their lines (the data's and the linear probe's, warnings) reached
the console unformatted and `train.log` not at all. Lightning has no hook that runs before the
datamodule's setup in such a process, so the set-up happens as this callback is unpickled there.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch import Callback

from sft.utils.console_streams import going_on_without_reader, writable_in_any_encoding
from sft.utils.logs import LoggingSetup, ignore_lightning_internal_warnings


class SpawnedRankLogging(Callback):
    """Holds this process's logging set-up; unpickled in another process (a spawned DDP rank),
    sets it up there."""

    def __init__(self) -> None:
        self.setup_of_run = LoggingSetup()
        self.pid = os.getpid()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if os.getpid() != self.pid:  # not a copy made in this process
            # the console command's streams (sft.entry_points), before handlers are made on
            # them: a spawned rank writes to the same pipe (`| tee` stopped: was a failed rank)
            writable_in_any_encoding()
            going_on_without_reader()
            self.setup_of_run.apply()
            ignore_lightning_internal_warnings()
