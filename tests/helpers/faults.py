"""Faults injected into training runs by the resume / interrupt tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback


class SignalAtStep(Callback):
    """Send `signal` to this process when the training batch after `step` optimizer steps starts
    (SIGKILL: dies mid-batch, as a crashed or OOM-killed job would); `to_parent`: to the process
    that started this one instead, from rank 0 (ddp_spawn's main process, which `kill <pid>`
    reaches alone); `times`: that many, 50 ms apart (one signal delivered twice, as `timeout`
    delivers it to a process and its group); `batch_idx`: at that batch of the epoch only (a
    batch of a gradient accumulation after the first); `to_group`: to this process's whole
    process group (its DataLoader workers too), as `timeout` and a cluster's preemption send it."""

    def __init__(
        self,
        step: int,
        signal: str = "SIGKILL",
        to_parent: bool = False,
        times: int = 1,
        batch_idx: int | None = None,
        to_group: bool = False,
    ) -> None:
        self.step = step
        self.signum = getattr(signal_module, signal)
        self.to_parent = to_parent
        self.times = times
        self.batch_idx = batch_idx
        self.to_group = to_group

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.batch_idx is not None and batch_idx != self.batch_idx:
            return
        if trainer.global_step == self.step and not (self.to_parent and trainer.global_rank):
            for i in range(self.times):
                time.sleep(0.05 if i else 0)
                if self.to_group:  # from another process, as `timeout` or a cluster sends it
                    signal_group = f"import os; os.killpg({os.getpgrp()}, {int(self.signum)})"
                    subprocess.run([sys.executable, "-c", signal_group], check=False)
                else:
                    os.kill(os.getppid() if self.to_parent else os.getpid(), self.signum)


class MarkAtStep(Callback):
    """Write the file `marker` once the training batch after `step` optimizer steps starts (or
    Lightning calls `hook`, e.g. `on_test_batch_start`): a test signals a sweep whose jobs run
    in processes it does not know (launchers') then."""

    def __init__(self, marker: str, step: int = 0, hook: str = "on_train_batch_start") -> None:
        self.marker, self.step = marker, step
        setattr(self, hook, self._mark)

    def _mark(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step >= self.step:
            open(self.marker, "a").close()


signal_module = signal


class SignalInSanityCheck(Callback):
    """Send `signal` to this process when the sanity check's first batch starts (before any
    training step)."""

    def __init__(self, signal: str) -> None:
        self.signum = getattr(signal_module, signal)

    def on_validation_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.sanity_checking:
            os.kill(os.getpid(), self.signum)


class NaNWeightsAtStep(Callback):
    """Fill every weight with NaN before the batch after `step` optimizer steps: its loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


class Crash(BaseException):
    """Not an Exception: nothing on the way up handles it, as with a kill."""


class CrashAtStep(Callback):
    """Raise `Crash` when the training batch after `step` optimizer steps starts (in-process)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise Crash


class BugAtStep(Callback):
    """Raise a RuntimeError (a bug, no user mistake) when the training batch after `step`
    optimizer steps starts."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("a bug in a callback")


class SignalOnceAtStep(SignalAtStep):
    """`SignalAtStep`, the first time only: `marker` (a file) records that it fired, so the
    requeued run of the same job, resumed at that step, is not signalled again."""

    def __init__(self, step: int, signal: str, marker: str) -> None:
        super().__init__(step, signal)
        self.marker = marker

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), self.signum)


class SlowSteps(Callback):
    """Sleep `seconds` after every training batch (or whenever Lightning calls `hook`, e.g.
    `on_test_batch_end`): a run long enough to be signalled mid-way."""

    def __init__(self, seconds: float, hook: str = "on_train_batch_end") -> None:
        self.seconds = seconds
        setattr(self, hook, self._sleep)

    def _sleep(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(self.seconds)


class SlowSave(Callback):
    """Take `seconds` longer to save every checkpoint from `step` optimizer steps on: a model
    whose checkpoint takes time to write."""

    def __init__(self, seconds: float, step: int = 0) -> None:
        self.seconds, self.step = seconds, step

    def on_save_checkpoint(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            time.sleep(self.seconds)


class Rendezvous(Callback):
    """Wait at the start of fit until `peers` runs (this one included) have reached it, or
    `timeout` seconds: runs meant to go at once then overlap whatever their start-up skew."""

    def __init__(self, folder: str, peers: int, timeout: float = 120.0) -> None:
        self.folder, self.peers, self.timeout = folder, peers, timeout

    def on_fit_start(self, *args: Any) -> None:
        import time

        os.makedirs(self.folder, exist_ok=True)
        open(os.path.join(self.folder, str(os.getpid())), "w").close()
        deadline = time.monotonic() + self.timeout
        while len(os.listdir(self.folder)) < self.peers and time.monotonic() < deadline:
            time.sleep(0.05)


class SignalInHook(Callback):
    """Send `signal` `times` times in a row to this process the first time Lightning calls the
    callback hook `hook` (`setup`: before training, while the data is set up;
    `on_test_batch_start`: in the test), 150 ms apart. Twice SIGINT in a training hook is a
    second Ctrl-C."""

    def __init__(
        self,
        hook: str,
        signal: str = "SIGINT",
        times: int = 1,
        step: int = 0,
        to_parent: bool = False,
    ) -> None:
        self.signum, self.times, self.step = getattr(signal_module, signal), times, step
        self.sent = False
        self.to_parent = to_parent  # ddp_spawn's main process, by rank 0
        setattr(self, hook, self._send)
        # a process started in the background (CI's nohup ... &) ignores SIGINT from birth, and
        # Python then installs no KeyboardInterrupt handler: Ctrl-C as a terminal delivers it
        if signal_module.getsignal(signal_module.SIGINT) == signal_module.SIG_IGN:
            signal_module.signal(signal_module.SIGINT, signal_module.default_int_handler)

    def _send(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self.sent or trainer.global_step < self.step:
            return
        self.sent = True
        if self.to_parent and trainer.global_rank:
            return
        for i in range(self.times):
            # a second Ctrl-C, as a person presses it: not within GracefulInterrupt's
            # SAME_SIGNAL_S of the first, which is then that one delivered twice
            time.sleep(0.15 if i else 0)
            os.kill(os.getppid() if self.to_parent else os.getpid(), self.signum)


class OutOfMemoryAtStep(Callback):
    """Raises torch's CPU allocator error at training step `step`, as a batch too large does."""

    def __init__(self, step: int = 0) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate "
                "memory: you tried to allocate 9437184 bytes. Error code 12 (Cannot allocate "
                "memory)"
            )
