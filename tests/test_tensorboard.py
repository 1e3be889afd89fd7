"""TensorBoard: a sweep's runs under one logdir, served by a real TensorBoard process, show their
scalars and an HParams table whose metric values are the runs' real final metrics."""

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import FAST, run_entry_point

from sft.runs.tensorboard_hparams import comparable_hparams, flatten_hparams
from sft.train import main

LR_HEADS = (0.01, 0.1)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, data_dir) -> Path:
    """`sft-train -m model.lr_head=0.01,0.1` (in this process), two epochs each."""
    sweep = tmp_path_factory.mktemp("tb_sweep")
    argv = [
        "sft-train",
        "-m",
        *FAST,
        "data.samples_per_class=4",
        "data.batch_size=16",
        "data.eval_batch_size=64",
        "data.val_size=64",
        "+trainer.limit_test_batches=2",
        "trainer=cpu",  # a config group's choice: an hparam
        "trainer.max_epochs=2",
        f"model.lr_head={','.join(map(str, LR_HEADS))}",
        f"hydra.sweep.dir={sweep}",
    ]
    assert run_entry_point(main, argv) == 0  # no job fails
    return sweep


@pytest.fixture(scope="module")
def tensorboard_url(sweep_dir, tmp_path_factory):
    """`tensorboard --logdir <sweep dir>` on 127.0.0.1, a free port; its base URL."""
    log = tmp_path_factory.mktemp("tb_server") / "stderr.txt"
    with log.open("w") as stderr:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                f"--logdir={sweep_dir}",
                "--host=127.0.0.1",
                "--port=0",
                "--load_fast=false",
                "--reload_interval=1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 90
        while not (found := re.search(r"http://127\.0\.0\.1:(\d+)/", log.read_text())):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield f"http://127.0.0.1:{found.group(1)}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def poll(fetch, ready, timeout: float = 90.0):
    """fetch() until ready(result): TensorBoard loads the event files in the background."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if ready(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def job_results(sweep_dir: Path) -> dict[str, dict]:
    """result.json of each job by its TensorBoard run name (`<job>/tensorboard`)."""
    return {
        f"{p.parent.name}/tensorboard": json.loads(p.read_text())
        for p in sweep_dir.glob("*/result.json")
    }


@pytest.mark.slow
def test_runs_and_scalars_are_served_per_job(sweep_dir, tensorboard_url):
    results = job_results(sweep_dir)
    assert len(results) == 2 and all(r["status"] == "completed" for r in results.values())

    runs = poll(lambda: get(f"{tensorboard_url}/data/runs"), lambda r: len(r) >= 2)
    assert sorted(runs) == sorted(results)
    tags = poll(
        lambda: get(f"{tensorboard_url}/data/plugin/scalars/tags"),
        lambda t: all("test/acc" in t.get(run, {}) for run in results),
    )
    for run, result in results.items():
        assert {"val/acc_best", "val/acc", "val/loss", "test/acc", "train/loss_epoch"} <= set(
            tags[run]
        )
        assert "hp_metric" not in tags[run]
        # the test metrics are scalars of the same run, with the values the run returned
        points = get(f"{tensorboard_url}/data/plugin/scalars/scalars?run={run}&tag=test/acc")
        assert points[-1][2] == pytest.approx(result["metrics"]["test/acc"], abs=1e-6)
        best = get(f"{tensorboard_url}/data/plugin/scalars/scalars?run={run}&tag=val/acc_best")
        assert len(best) == 2  # one point per epoch, no extra hparams point at step 0


@pytest.mark.slow
def test_hparams_tab_lists_the_runs_with_their_real_metrics(sweep_dir, tensorboard_url):
    results = job_results(sweep_dir)
    experiment = poll(
        lambda: post(f"{tensorboard_url}/data/plugin/hparams/experiment", {"experimentName": ""}),
        lambda e: bool(e.get("metricInfos")),
    )
    metric_tags = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metric_tags[0] == "val/acc_best"
    assert {"test/acc", "test/loss", "val/acc", "val/loss"} <= set(metric_tags)
    assert "hp_metric" not in metric_tags and not any(t.startswith("train/") for t in metric_tags)
    hparam_order = [h["name"] for h in experiment["hparamInfos"]]
    hparam_names = set(hparam_order)
    assert {"model.lr_head", "model.head.branch", "data.samples_per_class", "seed"} <= hparam_names
    # what a researcher compares: the swept key first, no plumbing
    assert hparam_order[0] == "model.lr_head"
    assert not [n for n in hparam_order if n.startswith(("callbacks.", "logger.", "paths."))]
    assert not [n for n in hparam_order if n.endswith(("_target_", "_dir"))]

    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [
            {"metric": {"tag": "val/acc_best"}, "order": "ORDER_DESC"},
            {"metric": {"tag": "test/acc"}},
            {"hparam": "model.lr_head"},
        ],
        "startIndex": 0,
        "sliceSize": 100,
    }
    groups = poll(
        lambda: post(f"{tensorboard_url}/data/plugin/hparams/session_groups", request),
        lambda g: len(g.get("sessionGroups", [])) == 2,
    )["sessionGroups"]
    assert len(groups) == 2
    assert sorted(g["hparams"]["model.lr_head"] for g in groups) == list(LR_HEADS)
    for group in groups:
        result = results[group["name"]]
        assert group["hparams"]["trainer.enable_progress_bar"] == "false"
        assert group["hparams"]["trainer"] == "cpu"
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        for tag in ("val/acc_best", "test/acc"):
            assert values[tag] == pytest.approx(result["metrics"][tag], abs=1e-6)
        assert [s["status"] for s in group["sessions"]] == ["STATUS_SUCCESS"]


def test_flatten_hparams_keeps_values_readable():
    flat = flatten_hparams(
        {"model": {"lr": 0.1, "head": {"branch": "mlp"}, "freeze": True}, "tags": ["a"], "x": None}
    )
    assert flat == {
        "model.lr": 0.1,
        "model.head.branch": "mlp",
        "model.freeze": "true",
        "tags": "['a']",
        "x": "null",
    }


def test_swept_paths_and_targets_are_compared():
    """A sweep over data.data_dir or model.optimizer._target_: those keys were left out as
    plumbing, so the HParams tab listed its jobs with the same values."""
    cfg = {
        "data": {"data_dir": "/data/a", "batch_size": 32},
        "model": {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}},
        "paths": {"log_dir": "/out"},
    }
    swept = ["data.data_dir=/data/a", "model.optimizer._target_=torch.optim.SGD"]
    assert comparable_hparams(cfg, swept) == {
        "data.data_dir": "/data/a",
        "model.optimizer._target_": "torch.optim.SGD",
        "data.batch_size": 32,
        "model.optimizer.lr": 0.1,
    }
    # not swept: left out, as plumbing, also when overridden
    expected = {"data.batch_size": 32, "model.optimizer.lr": 0.1}
    assert comparable_hparams(cfg) == expected
    assert comparable_hparams(cfg, overrides=swept) == expected


def test_swept_and_given_config_group_choices_are_compared():
    """`-m model=my_tiny,my_tiny2`: a group's choice was no hparam, so two model configs that
    differ in their backbone's `_target_` listed their jobs with the same values."""
    cfg = {"model": {"backbone": {"_target_": "my.TinyNet2", "width": 8}}, "seed": 0}
    choices = {"model": "my_tiny2", "experiment": "mine", "data": "cifar10", "logger": "csv"}
    swept, overrides = ["model"], ["experiment=mine", "logger=csv", "seed=0"]
    assert comparable_hparams(cfg, swept, overrides, choices) == {
        "model": "my_tiny2",
        "experiment": "mine",
        "seed": 0,
        "model.backbone.width": 8,
    }


def test_a_run_in_process_leaves_no_tensorboard_writer_open(tmp_path):
    """Training from Python, as a notebook or an in-process sweep does: each run left a
    TensorBoard writer thread running (its hparams summary reopened the writer Lightning had
    closed), one more per run."""
    import threading

    from conftest import compose_config

    from sft.jobs.train import train

    def writer_threads() -> int:
        return sum(type(t).__name__ == "_AsyncWriterThread" for t in threading.enumerate())

    before = writer_threads()
    overrides = [*FAST, "trainer.max_epochs=1", "+trainer.limit_train_batches=2"]
    for run in ("a", "b"):
        train(compose_config("train", overrides, tmp_path / run))
        assert writer_threads() == before
        assert list((tmp_path / run / "tensorboard").glob("events.out.tfevents.*"))
