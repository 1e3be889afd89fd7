"""keep_freed_memory: a training process reuses what it freed instead of faulting pages back in."""

import platform
import subprocess
import sys

import pytest

import sft.jobs.train
from sft.errors import SFTError

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)

# Steps that each allocate and free a 64 MiB tensor, as a step's gradients are: the minor page
# faults of 10 such steps after 10 warm-up ones (the heap settles), in a fresh process
STEPS = """
import resource, sys, torch
from sft.utils.allocator import give_back_freed_memory, keep_freed_memory
if sys.argv[1] in ("keep", "given_back") and not keep_freed_memory():
    sys.exit(3)  # refused by this C library
if sys.argv[1] == "given_back":
    give_back_freed_memory()
for _ in range(10):
    torch.ones(16 * 2**20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 * 2**20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True)
    if done.returncode == 3:
        pytest.skip("this glibc refused the settings")
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


@glibc_only
def test_freed_memory_is_reused_without_faulting_pages_back_in():
    pages = 64 * 2**20 // 4096
    # glibc's default: every step maps its 64 MiB afresh
    assert page_faults("default") > 8 * pages
    # kept: the steps reuse the pages of the ones before
    assert page_faults("keep") < pages
    # given back as a run from sft.api ends (was: kept for the rest of the process)
    assert page_faults("given_back") > 8 * pages


@pytest.mark.parametrize("keep", [True, False])
def test_training_keeps_freed_memory_unless_switched_off(train_cfg, monkeypatch, keep):
    calls = []
    monkeypatch.setattr(sft.jobs.train, "keep_freed_memory", lambda: calls.append(1) or True)
    sft.jobs.train.train(
        train_cfg(f"keep_freed_memory={str(keep).lower()}", "train=false", "test=false")
    )
    assert calls == ([1] if keep else [])


def test_a_keep_freed_memory_that_is_not_a_bool_is_one_error(train_cfg):
    with pytest.raises(SFTError, match=r"keep_freed_memory: expected true or false, got 'often'"):
        sft.jobs.train.train(train_cfg("keep_freed_memory=often", "train=false", "test=false"))
