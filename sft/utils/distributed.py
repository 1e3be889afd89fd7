"""torch.distributed housekeeping that Lightning leaves to the backend."""

from __future__ import annotations

import atexit

import torch.distributed as dist


def destroy_process_group_at_exit() -> None:
    """Have this process destroy its default process group when it exits, while the interpreter
    is still whole. Lightning does so for NCCL only (`_init_dist_connection`): a gloo group (CPU
    DDP, `trainer=ddp_sim`) left to interpreter finalisation aborts the process now and then
    ("terminate called without an active exception", SIGABRT: 5 of 30 two-rank spawns on a
    2-core machine; pytorch/pytorch#190489). Registering again replaces the earlier entry."""
    if dist.get_backend() == "nccl":  # Lightning's own handler destroys it
        return
    atexit.unregister(_destroy_default_group)
    atexit.register(_destroy_default_group)


def _destroy_default_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def end_process_group() -> None:
    """Destroy this process's default process group, if any: a multirun job's DDP ranks have
    ended with it, and Lightning would find it initialised in the next job and use it (its
    peers gone: "Connection closed by peer")."""
    _destroy_default_group()
