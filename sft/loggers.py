"""Loggers of `conf/logger` that Lightning's own do not cover as a run needs."""

import csv
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class ContinuingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, continuing the `metrics.csv` in its folder, whose columns may
    be another process's. Lightning's deletes the file when a writer is made, and rewrites it
    with the columns it has seen itself: the test of a ddp_spawn run (trainer=ddp_sim), in new
    processes with the copy of a writer that had seen none, deleted the fit's rows or failed on
    their columns."""

    def _check_log_dir_exists(self) -> None:
        pass  # the file is continued, not deleted

    def _record_new_keys(self) -> set[str]:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                written = next(csv.reader(f), [])
            self.metrics_keys.extend(k for k in written if k not in self.metrics_keys)
        return super()._record_new_keys()


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger; a copy unpickled in another process (a ddp_spawn rank) continues
    the run's `metrics.csv` (`ContinuingExperimentWriter`). One made here writes a new file, as
    Lightning's does (a failed run's folder run again; a resumed run writes to a new version
    folder: `sft.runs.resume.continue_csv_logs`)."""

    _continues = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._continues = True
        self._experiment = None  # made again here, continuing the file

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            writer = ContinuingExperimentWriter if self._continues else ExperimentWriter
            self._experiment = writer(log_dir=self.log_dir)
        return self._experiment
