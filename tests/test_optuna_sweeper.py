"""The sft_optuna Hydra sweeper (hydra_plugins/sft_optuna_sweeper): its search space, a study
that a re-run resumes, and pruning, through real `sft-train -m` runs on a tiny CNN (CPU), in this
process (sft-train's main, as its console script calls it) to spare each a new interpreter's
seconds of imports."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from conftest import run_entry_point
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.sft_optuna_sweeper._search_space import build_search_space, format_value
from hydra_plugins.sft_optuna_sweeper._sweep import check_distributions
from sft.callbacks.optuna_pruning import OptunaPruning, open_storage
from sft.compare import find_runs, summarize
from sft.errors import SFTError
from sft.train import main

# conftest's FAST, smaller still; pretrained:false as the searched experiments ask for weights
TINY = [
    "~model.backbone",
    "+model.backbone={_target_:sft.models.backbones.create_backbone,name:small_cnn,width:8,"
    "pretrained:false}",
    "data.samples_per_class=10",
    "data.batch_size=32",
    "data.val_size=200",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "test=false",
]


def the_pruned_trial(sweep_dir: Path, study_name: str) -> dict:
    """The result.json of the study's one trial, which Optuna has as pruned."""
    (trial,) = load_study(sweep_dir, study_name).trials
    assert trial.state == TrialState.PRUNED
    return json.loads((sweep_dir / "0" / "result.json").read_text())


def threshold_pruner(upper: float) -> list[str]:
    """A search minimising val/loss whose pruner stops a trial above `upper` (or at NaN)."""
    return [
        "hydra.sweeper.direction=minimize",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        f"+hydra.sweeper.pruner.upper={upper}",
        "optimized_metric=val/loss",
    ]


def sft_train_multirun(sweep_dir: Path, *overrides: str) -> None:
    """`sft-train -m` of TINY and `overrides` into `sweep_dir`, in this process (the basic
    launcher runs the trials in it; a ddp_sim trial spawns its ranks): it ends well."""
    argv = ["sft-train", "-m", *TINY, *overrides, f"hydra.sweep.dir={sweep_dir}"]
    assert run_entry_point(main, argv) == 0


def load_study(sweep_dir: Path, name: str) -> optuna.Study:
    """The study in the sweep directory's default storage (a journal file)."""
    storage = open_storage(f"journal://{sweep_dir / 'optuna.journal'}")
    return optuna.load_study(study_name=name, storage=storage)


def job_overrides(sweep_dir: Path) -> dict[int, str]:
    return {
        int(job.name): (job / ".hydra" / "overrides.yaml").read_text()
        for job in sweep_dir.iterdir()
        if job.name.isdigit()
    }


def test_a_study_continued_with_other_choices_is_refused_before_any_trial():
    """A categorical parameter's choices changed between runs of a study: Optuna raised
    "CategoricalDistribution does not support dynamic value space" when the trial asked, with
    a traceback, and left the trial running for good."""
    study = optuna.create_study(study_name="s")
    study.add_trial(
        optuna.trial.create_trial(
            params={"model.head.branch": "linear", "model.lr_head": 0.1},
            distributions={
                "model.head.branch": CategoricalDistribution(["linear", "mlp"]),
                "model.lr_head": FloatDistribution(1e-4, 1.0, log=True),
            },
            value=0.5,
        )
    )
    wider = build_search_space(
        OmegaConf.create({}),
        ["model.head.branch=choice(linear,mlp,none)", "model.lr_head=tag(log,interval(1e-5,1))"],
    )
    with pytest.raises(SFTError) as error:
        check_distributions(study, "journal://x", wider)
    assert str(error.value).startswith(
        "model.head.branch: study 's' in journal://x searched it as "
        "CategoricalDistribution(choices=('linear', 'mlp')), now "
        "CategoricalDistribution(choices=('linear', 'mlp', 'none')): "
    )
    assert str(error.value).endswith(
        "Search it as before, or start another study (hydra.sweeper.study_name=<new name>, or "
        "another hydra.sweep.dir)"
    )
    # a range may change (the README's "change its range")
    check_distributions(
        study,
        "journal://x",
        build_search_space(OmegaConf.create({}), ["model.lr_head=tag(log,interval(1e-5,1))"]),
    )


def test_a_search_with_pruner_null_runs_unpruned(tmp_path, data_dir):
    """`hydra.sweeper.pruner=null` was a traceback from instantiate (after the study was made);
    it is hydra/sweeper/pruner=none's NopPruner."""
    sft_train_multirun(
        tmp_path,
        "hydra/sweeper=sft_optuna",
        "hydra.sweeper.study_name=unpruned",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.pruner=null",
        "model.lr_head=choice(0.1,0.5)",
        "trainer.max_epochs=1",
    )
    (trial,) = load_study(tmp_path, "unpruned").trials
    assert trial.state == TrialState.COMPLETE
    assert load_study(tmp_path, "unpruned").user_attrs["sft_pruner"] == {
        "_target_": "optuna.pruners.NopPruner"
    }


@pytest.mark.parametrize(
    "search",
    [
        "hparams_search=cifar10_optuna",
        "hparams_search=sst2_minilm_optuna",
        "hydra/sweeper=sft_optuna",
    ],
)
@pytest.mark.parametrize(
    ("metric", "direction"), [("val/acc_best", "maximize"), ("val/loss", "minimize")]
)
def test_a_search_goes_the_way_its_metric_is_better(search, metric, direction):
    """A study on a loss minimises it (was: the configs' fixed `direction: maximize` searched,
    pruned and reported the highest loss as best, while summary.md named the lowest)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sft.utils.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        overrides = [search, f"optimized_metric={metric}"]
        cfg = compose("train", overrides, return_hydra_config=True)
    assert OmegaConf.select(cfg, "hydra.sweeper.direction") == direction


@pytest.mark.parametrize(
    ("monitor", "metric", "direction", "refused"),
    [
        ("val/loss", "val/acc_best", "maximize", True),
        ("val/acc", "val/loss", "minimize", True),
        # a direction set by hand for a metric whose name does not say: no monitor, or one of
        # its kind, runs (was, briefly: every such search refused)
        (None, "val/perplexity", "minimize", False),
        ("val/loss", "val/perplexity", "minimize", False),
        ("val/perplexity", "val/loss", "minimize", False),
    ],
)
def test_a_monitor_against_the_studys_direction_is_refused(monitor, metric, direction, refused):
    from hydra_plugins.sft_optuna_sweeper._sweep import check_monitor

    if refused:
        with pytest.raises(SFTError, match=rf"^hydra\.sweeper\.monitor={monitor} is better"):
            check_monitor(monitor, metric, direction)
    else:
        check_monitor(monitor, metric, direction)


@pytest.mark.parametrize("search", ["cifar10_optuna", "sst2_minilm_optuna"])
def test_a_shipped_search_tries_its_experiments_own_settings_first(search):
    """A shipped search's first trial is its experiment's own settings, inside the space
    searched (cifar10_optuna's L2-SP strength stayed on the loss term's scale, 1e-4 and
    1e-6..1e-2, after effnet_lite0_fused moved to the decoupled pull's, 0.1: no pull at all)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sft.utils.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", [f"hparams_search={search}"], return_hydra_config=True)
    space = build_search_space(cfg.hydra.sweeper.params, []).distributions
    first = cfg.hydra.sweeper.enqueue_trials[0]
    assert set(first) == set(space)
    for key, dist in space.items():
        own = OmegaConf.select(cfg, key)
        assert first[key] == own, key
        if isinstance(dist, CategoricalDistribution):
            assert own in dist.choices, key
        else:
            assert dist.low <= own <= dist.high, key


def test_search_space_from_config_params_and_command_line():
    params = OmegaConf.create(
        {
            "model.lr_backbone": "tag(log, interval(1e-5, 1e-3))",
            "model.head.hidden_dim": "tag(int, interval(16, 256))",
            # Hydra's cast: integer bounds (was: a float interval)
            "trainer.max_epochs": "int(interval(2, 5))",
            "data.batch_size": "range(16, 65, 16)",
            "model.head.branch": "choice(linear, mlp)",
            "model.head.dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
            "model.regularizer": "l2sp,l2",
            "model.reg_lambda": 0.001,
        }
    )
    space = build_search_space(
        params, ["model.head.branch=mlp", "seed=1,2", "~model.linear_probe", "+trainer.foo=1"]
    )
    assert space.distributions == {
        "model.lr_backbone": FloatDistribution(1e-5, 1e-3, log=True),
        "model.head.hidden_dim": IntDistribution(16, 256),
        "trainer.max_epochs": IntDistribution(2, 5),
        # Hydra's range excludes its stop
        "data.batch_size": IntDistribution(16, 64, step=16),
        "model.head.dropout": FloatDistribution(0.0, 0.5, step=0.1),
        "model.regularizer": CategoricalDistribution(["l2sp", "l2"]),
        "seed": CategoricalDistribution([1, 2]),
    }
    # a command-line value replaces the config's search over the same key
    trial = {"model.lr_backbone": 1.5e-4, "model.head.hidden_dim": 64, "data.batch_size": 48}
    trial |= {"trainer.max_epochs": 3}
    trial |= {"model.head.dropout": 0.2, "model.regularizer": "l2", "seed": 2}
    assert space.trial_overrides(trial) == [
        "model.reg_lambda=0.001",
        "model.head.branch=mlp",
        "~model.linear_probe",
        "+trainer.foo=1",
        "model.lr_backbone=0.00015",
        "model.head.hidden_dim=64",
        "trainer.max_epochs=3",
        "data.batch_size=48",
        "model.head.dropout=0.2",
        "model.regularizer=l2",
        "seed=2",
    ]


def test_a_searched_key_the_configs_lack_keeps_its_plus():
    """`+model.lr_head=tag(log,interval(...))` for a model config without lr_head: the trials
    wrote `model.lr_head=...` ("Could not override 'model.lr_head'. To append ... use +")."""
    params = OmegaConf.create({"+model.extra": {"type": "int", "low": 1, "high": 3}})
    space = build_search_space(params, ["+model.lr_head=tag(log,interval(1e-4,1e-1))"])
    assert space.trial_overrides({"model.extra": 2, "model.lr_head": 0.01}) == [
        "+model.extra=2",
        "+model.lr_head=0.01",
    ]
    # the command line fixing (or searching) a key the config adds: added still, as Hydra
    # composes `+key=a key=b` (was: `model.extra=5`, which does not compose)
    fixed = build_search_space(
        params, ["model.extra=5", "+model.b=1", "model.b=tag(int,interval(1,3))"]
    )
    assert fixed.trial_overrides({"model.b": 2}) == ["+model.extra=5", "+model.b=2"]
    # ... unless deleted in between, which Hydra then refuses a plain override of
    deleted = build_search_space({}, ["+model.x=1", "~model.x", "model.x=3"])
    assert deleted.trial_overrides({}) == ["~model.x", "model.x=3"]


def test_search_values_are_the_ones_hydra_sweeps():
    """Each was another: a quoted choice refused, range(0,1,0.3)'s 0.9 never drawn, 1.5 drawn
    as 1 below tag(int,interval(1.5,8)), a step of 0 taken as 1, a plain list value refused."""
    space = build_search_space(
        {"model.metrics": ["acc", "f1"], "d": {"type": "int", "low": 1, "high": 3}},
        ["x='a b',c", "z=range(0,1,0.3)", "w=tag(int,interval(1.5,8))"],
    )
    assert space.distributions == {
        "d": IntDistribution(1, 3),
        "x": CategoricalDistribution(["a b", "c"]),
        "z": FloatDistribution(0.0, 0.9, step=0.3),
        "w": IntDistribution(2, 8),
    }
    assert space.trial_overrides({"d": 1, "x": "a b", "z": 0.9, "w": 2})[0] == (
        "model.metrics=[acc,f1]"
    )
    with pytest.raises(SFTError, match=r"^hydra\.sweeper\.params\.d: ValueError: `step > 0`"):
        build_search_space({"d": {"type": "int", "low": 1, "high": 3, "step": 0}}, [])


@pytest.mark.parametrize(
    ("sweep", "error"),
    [
        ("tag(log,interval(0.3,1e-3))", "`low <= high` must hold"),
        ("tag(log,interval(-1,1))", "`low > 0` must hold for `log=True`"),
    ],
)
def test_search_bounds_optuna_refuses_are_one_line(sweep, error):
    """Were: Optuna's ValueError traceback."""
    with pytest.raises(SFTError, match=rf"^model\.lr_head={re.escape(sweep)}: .*{error}"):
        build_search_space({}, [f"model.lr_head={sweep}"])


def test_trial_values_are_written_as_overrides_that_parse_back():
    parser = OverridesParser.create()
    for value in [1e-5, 0.1, 3, True, None, "mlp", "1", "true", "null", "a,b", "it's", "val/acc"]:
        parsed = parser.parse_override(f"k={format_value(value)}").value()
        assert parsed == value and type(parsed) is type(value), (value, format_value(value))
    for value in [["acc", "a b"], {"a": 1, "b": [None, True]}, []]:  # plain values in params
        assert parser.parse_override(f"k={format_value(value)}").value() == value
    with pytest.raises(SFTError, match=r"cannot write \{'1': 2\} as an override value"):
        format_value({"1": 2})  # no key of Hydra's grammar reads back as the text '1'


@pytest.mark.slow
def test_rerun_resumes_the_study_with_new_trials_in_new_job_dirs(tmp_path, data_dir):
    search = ["hparams_search=cifar10_optuna", "trainer.max_epochs=1"]
    sft_train_multirun(tmp_path, *search, "hydra.sweeper.n_trials=4")
    first = job_overrides(tmp_path)
    assert sorted(first) == [0, 1, 2, 3]

    # the same command again: the seeded sampler must not replay the first run's points
    sft_train_multirun(tmp_path, *search, "hydra.sweeper.n_trials=2")
    jobs = job_overrides(tmp_path)
    assert sorted(jobs) == [0, 1, 2, 3, 4, 5]
    assert {n: jobs[n] for n in first} == first, "the re-run rewrote a first-run job"

    trials = load_study(tmp_path, "cifar10_optuna").trials
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6, "a trial was repeated"
    for t in trials:  # job directory N ran trial N's parameters
        for key, value in t.params.items():
            assert f"- {key}={format_value(value)}\n" in jobs[t.number]
    assert trials[0].params["model.lr_backbone"] == 1e-4  # the config's enqueued trial

    results = OmegaConf.load(tmp_path / "optimization_results.yaml")
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert results.best_value == best.value and results.best_params == best.params
    assert results.storage == f"journal://{tmp_path / 'optuna.journal'}"
    assert sum(results.n_trials.values()) == 6 and "fail" not in results.n_trials


def test_an_interrupted_search_writes_the_results_of_the_trials_it_finished(
    tmp_path, monkeypatch, data_dir
):
    """Ctrl-C in a search's second trial: optimization_results.yaml kept the run before's
    counts and best (or was not written at all), while summary.md was up to date."""
    from hydra_plugins.sft_optuna_sweeper._sweep import OptunaSweep

    run_batch = OptunaSweep.run_batch
    batches = []

    def interrupted_second(self, *args, **kwargs):
        batches.append(1)
        if len(batches) == 2:
            raise KeyboardInterrupt
        return run_batch(self, *args, **kwargs)

    monkeypatch.setattr(OptunaSweep, "run_batch", interrupted_second)
    argv = ["sft-train", "-m", *TINY, "hparams_search=cifar10_optuna", "trainer.max_epochs=1"]
    argv += ["hydra.sweeper.n_trials=3", "+trainer.limit_train_batches=1"]
    with pytest.raises(KeyboardInterrupt):
        run_entry_point(main, [*argv, f"hydra.sweep.dir={tmp_path}"])
    results = OmegaConf.load(tmp_path / "optimization_results.yaml")
    # the stopped trial as summary.md has it (was: "fail")
    counts = {"complete": 1, "interrupted": 1}
    assert (results.best_trial, dict(results.n_trials)) == (0, counts)


def test_an_interrupted_enqueued_trial_runs_when_the_search_goes_on(
    tmp_path, monkeypatch, data_dir
):
    """Ctrl-C in the config's enqueued trial (its baseline): the continued search never ran it,
    since Optuna's skip_if_exists counted the failed trial as run."""
    from hydra_plugins.sft_optuna_sweeper._sweep import OptunaSweep

    run_batch = OptunaSweep.run_batch

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(OptunaSweep, "run_batch", interrupted)
    argv = ["sft-train", "-m", *TINY, "hparams_search=cifar10_optuna", "trainer.max_epochs=1"]
    argv += ["hydra.sweeper.n_trials=1", "+trainer.limit_train_batches=1", "test=false"]
    with pytest.raises(KeyboardInterrupt):
        run_entry_point(main, [*argv, f"hydra.sweep.dir={tmp_path}"])
    monkeypatch.setattr(OptunaSweep, "run_batch", run_batch)
    assert run_entry_point(main, [*argv, f"hydra.sweep.dir={tmp_path}"]) == 0
    trials = load_study(tmp_path, "cifar10_optuna").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params
    assert trials[1].params["model.lr_backbone"] == 1e-4  # the config's enqueued trial


def test_a_new_study_in_a_sweep_folder_reuses_a_finished_job_of_the_same_trial(tmp_path, data_dir):
    """Another study (study_name) in a sweep folder samples the first study's enqueued trial
    again: its job continues the finished job 0 and reports that job's value (was: None, so the
    trial failed while the summary said completed and the command exited 0)."""
    search = [
        "hydra/sweeper=sft_optuna",
        "hydra.sweeper.n_trials=1",
        "model.lr_head=choice(0.1,0.5)",
    ]
    search.append("hydra.sweeper.enqueue_trials=[{model.lr_head:0.1}]")
    sft_train_multirun(tmp_path, *search, "trainer.max_epochs=1", "hydra.sweeper.study_name=first")
    sft_train_multirun(tmp_path, *search, "trainer.max_epochs=1", "hydra.sweeper.study_name=second")
    (first,) = load_study(tmp_path, "first").trials
    (second,) = load_study(tmp_path, "second").trials
    assert second.state == TrialState.COMPLETE and second.value == first.value
    results = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert results.study_name == "second" and results.best_value == first.value
    # the first study's results are kept (were: written over)
    kept = OmegaConf.load(tmp_path / "optimization_results_first.yaml")
    assert kept.study_name == "first" and kept.best_trial == 0


def test_results_of_studies_taking_turns_in_a_sweep_folder_are_each_kept(tmp_path):
    """Studies a, b, a, b in one folder: the results file of the one not run now is kept under
    its name, with its latest results (was, briefly: a's first results kept, its later ones
    written over); a study name with a `/` makes a file name (was: ValueError at the end)."""
    from hydra_plugins.sft_optuna_sweeper._sweep import RESULTS_FILE, keep_another_studys_results

    path = tmp_path / RESULTS_FILE
    for turn, study in enumerate(["a/x", "b", "a/x", "b"]):
        keep_another_studys_results(path, study)
        OmegaConf.save(OmegaConf.create({"study_name": study, "turn": turn}), path)
    kept = OmegaConf.load(tmp_path / "optimization_results_a_x.yaml")
    assert (kept.study_name, kept.turn) == ("a/x", 2)
    assert OmegaConf.load(path).turn == 3


def test_median_pruner_stops_a_diverging_trial(tmp_path, data_dir):
    """A linear head on frozen features, validated twice in its one epoch: trial 0 (SGD at
    lr 0.1) completes at a validation loss near 2.3; trial 1 (lr 1e4) overshoots to a loss in the
    thousands at its first validation, above the median of completed trials, so the median
    pruner stops it there, in mid-epoch (was: trained on to the end of the epoch, min_epochs=1)."""
    sft_train_multirun(
        tmp_path,
        "hydra/sweeper=sft_optuna",
        "hydra.sweeper.study_name=diverging",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.direction=minimize",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "optimized_metric=val/loss",
        "trainer.max_epochs=1",
        "trainer.val_check_interval=0.5",
        "model.freeze_backbone=true",
        "model.warmup_ratio=0",  # trial 1 diverges in its first steps
        "model.lr_head=choice(0.1,1e4)",
        "hydra.sweeper.enqueue_trials=[{model.lr_head:0.1},{model.lr_head:1e4}]",
    )
    good, diverged = load_study(tmp_path, "diverging").trials
    assert good.params == {"model.lr_head": 0.1} and good.state == TrialState.COMPLETE
    assert diverged.params == {"model.lr_head": 1e4}
    assert diverged.state == TrialState.PRUNED
    assert sorted(good.intermediate_values) == [0, 1, 2]  # 7 batches: after 3, 6 and 7
    assert sorted(diverged.intermediate_values) == [0]
    assert diverged.intermediate_values[0] > 10 * good.intermediate_values[0]

    def last_step(job: int) -> int:
        last = tmp_path / str(job) / "checkpoints" / "last.ckpt"
        return torch.load(last, weights_only=True)["global_step"]

    assert last_step(1) < last_step(0), "the pruned trial kept training"
    results = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert results.n_trials == {"complete": 1, "pruned": 1}
    assert results.best_trial == 0
    # the user's and the trial's overrides, without the sweeper's pruning callback (was: a
    # `++callbacks.optuna_pruning={_target_:...,storage:...}` in every row)
    recorded = json.loads((tmp_path / "1" / "result.json").read_text())["overrides"]
    assert "model.lr_head=10000.0" in recorded
    assert not [o for o in recorded if "optuna_pruning" in o]
    assert "optuna_pruning" not in (tmp_path / "summary.md").read_text()
    # recorded as pruned, as Optuna has it, and not a candidate for the best job (was: completed)
    statuses = {
        job: json.loads((tmp_path / job / "result.json").read_text())["status"] for job in "01"
    }
    assert statuses == {"0": "completed", "1": "pruned"}
    summary = (tmp_path / "summary.md").read_text()
    assert "2 jobs, 1 completed, 1 pruned, 0 failed." in summary and "Best: job 0 " in summary
    rows = summarize(find_runs([tmp_path])[0], "val/loss", "min")
    assert {Path(row.path).parent.name: row.status for row in rows} == statuses


def test_a_search_on_a_validation_metric_without_validation_is_refused(
    tmp_path, capsys, monkeypatch, data_dir
):
    """optimized_metric=val/... with trainer.limit_val_batches=0: every trial failed while the
    sweep's summary said completed and the command exited 0 (was: silent)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    argv = ["sft-train", "-m", *TINY, "hparams_search=cifar10_optuna"]
    argv += ["+trainer.limit_val_batches=0", f"hydra.sweep.dir={tmp_path}"]
    assert run_entry_point(main, argv) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: optimized_metric=val/acc_best is a validation metric but "
        "trainer.limit_val_batches=0 turns validation off: every trial would fail"
    )
    assert not any(p.name.isdigit() for p in tmp_path.iterdir())  # no trial ran


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("hydra.sweeper.direction=max", "hydra.sweeper.direction must be maximize or minimize"),
        ("hydra.sweeper.n_trials=-1", "hydra.sweeper.n_trials must be >= 0, not -1"),
        ("hydra.sweeper.n_trials=abc", "hydra.sweeper.n_trials: Value 'abc' of type 'str'"),
        (
            "hydra.sweeper.storage=sqlite:///{tmp}/nodir/x.db",
            "hydra.sweeper.storage=sqlite:///{tmp}/nodir/x.db: cannot open it as Optuna storage: "
            "unable to open database file",
        ),
        (
            "model.lr_haed=interval(1e-4,1e-2)",
            "the trials' overrides do not compose: unknown config key 'model.lr_haed' (did you "
            "mean 'model.lr_head'?",
        ),
        # an interval of an integer setting (was: each trial failed on its float, once started)
        (
            "data.batch_size=interval(16,64)",
            "the search space does not fit: data.batch_size: expected an integer, got 16.0; "
            "an interval draws floats, tag(int,interval(a,b)) integers",
        ),
        # a trainer setting: only the searched one is checked (was, briefly: its section's
        # default_root_dir, ${hydra:...}, which resolves in a job only, refused every search)
        (
            "trainer.max_epochs=interval(1,3)",
            "the search space does not fit: trainer.max_epochs: expected an integer or null, got "
            "1.0; an interval draws floats, tag(int,interval(a,b)) integers",
        ),
        # the config's enqueued trial outside the space searched now (was: Optuna's ValueError
        # traceback, its trial left RUNNING in the study, so never run)
        (
            "model.head.branch=choice(mlp,none)",
            "hydra.sweeper.enqueue_trials: model.head.branch='linear' is not in the search "
            "space, which draws one of ['mlp', 'none']",
        ),
        (
            "model.lr_head=tag(log,interval(1e-2,1e-1))",
            "hydra.sweeper.enqueue_trials: model.lr_head=0.001 is not in the search space, "
            "which draws numbers from 0.01 to 0.1",
        ),
        # a value Optuna refuses (was: Hydra's InstantiationException traceback, after the
        # study was made)
        (
            "hydra.sweeper.pruner.n_startup_trials=-1",
            "hydra.sweeper.pruner: Number of startup trials cannot be negative, but got "
            "n_startup_trials=-1.",
        ),
        # the pruner read val/loss as the study's accuracy (was: the lowest losses pruned)
        (
            "hydra.sweeper.monitor=val/loss",
            "hydra.sweeper.monitor=val/loss is better lower, but the study is to maximize "
            "(hydra.sweeper.direction, by default from optimized_metric=val/acc_best): ",
        ),
        (
            "hydra.callbacks.sweep_summary.mode=maximum",
            "hydra.callbacks.sweep_summary.mode must be min, max or null, not 'maximum'",
        ),
    ],
)
def test_a_sweeper_setting_mistake_is_one_error_line(tmp_path, capsys, monkeypatch, setting, error):
    """Each was a traceback (an SFTError raised outside the error reporter, SQLAlchemy's
    OperationalError, Hydra's report of a callback's ValueError) or Hydra's several lines."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    argv = ["sft-train", "-m", "hparams_search=cifar10_optuna", f"hydra.sweep.dir={tmp_path}/sweep"]
    code = run_entry_point(main, [*argv, setting.format(tmp=tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {error.format(tmp=tmp_path)}")


def test_a_search_on_a_test_metric_without_test_is_refused(tmp_path, capsys, monkeypatch):
    """optimized_metric=test/acc with test=false: every trial trained, then failed (was: exit 0)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    argv = ["sft-train", "-m", *TINY, "hparams_search=cifar10_optuna", "optimized_metric=test/acc"]
    code = run_entry_point(main, [*argv, f"hydra.sweep.dir={tmp_path}"])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: optimized_metric=test/acc is a test metric but test=false: every trial would "
        "fail; set test=true, or optimise a val/ metric"
    )
    assert not any(p.name.isdigit() for p in tmp_path.iterdir())  # no trial ran

    # with test=true it runs, selecting on the test split: said (was: not a word), and no
    # pruning on a metric logged after training (was: "not logged" warnings in every trial)
    argv += ["test=true", "hydra.sweeper.n_trials=1", "trainer.max_steps=1"]
    assert run_entry_point(main, [*argv, f"hydra.sweep.dir={tmp_path / 'tested'}"]) == 0
    said = capsys.readouterr()
    line = "optimized_metric=test/acc: the search ranks its trials on the test split"
    assert line in said.out + said.err
    assert "no trial is pruned: test/acc (hydra.sweeper.monitor, else" in said.out + said.err
    overrides = (tmp_path / "tested" / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "optuna_pruning" not in overrides


@pytest.mark.slow
def test_a_trial_pruned_in_spawned_ranks_is_recorded_as_pruned(tmp_path, data_dir):
    """trainer=ddp_sim: the ranks train in child processes, and the main process's pruning
    callback never saw the trial; its record still says pruned (was: completed). A threshold
    pruner that any validation loss exceeds stops the one trial after its first epoch."""
    sft_train_multirun(
        tmp_path,
        "trainer=ddp_sim",
        "hydra/sweeper=sft_optuna",
        "hydra.sweeper.study_name=spawned",
        "hydra.sweeper.n_trials=1",
        *threshold_pruner(upper=0.0),
        "trainer.max_epochs=2",
        "model.freeze_backbone=true",
        "model.lr_head=choice(0.1)",
    )
    result = the_pruned_trial(tmp_path, "spawned")
    assert (result["status"], result["epochs"]) == ("pruned", 1)


def search_with_a_failing_trial(tmp_path: Path, capsys, *overrides: str) -> dict:
    """One trial of cifar10_optuna, in this process, that fails: the sweep exits 1 with the
    summary's line, Optuna has the trial failed; the trial's result.json."""
    code = run_entry_point(
        main,
        [
            "sft-train",
            "-m",
            *TINY,
            "hparams_search=cifar10_optuna",
            "hydra.sweeper.n_trials=1",
            *overrides,
            "+trainer.limit_val_batches=1",
            "trainer.max_epochs=1",
            f"hydra.sweep.dir={tmp_path}",
        ],
    )
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: 1 of 1 jobs failed: see {tmp_path / 'summary.md'}"
    )
    (trial,) = load_study(tmp_path, "cifar10_optuna").trials
    assert trial.state == TrialState.FAIL
    result = json.loads((tmp_path / "0" / "result.json").read_text())
    assert result["status"] == "failed"
    return result


def test_a_trial_that_does_not_log_the_optimized_metric_fails_the_sweep(
    tmp_path, capsys, monkeypatch, data_dir
):
    """A typo in optimized_metric: the trial trained, Optuna failed it ("the job returned
    None"), but its result.json and summary.md said completed and the sweep exited 0. Now
    the trial fails after the sanity check, before it trains."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    result = search_with_a_failing_trial(
        tmp_path, capsys, "optimized_metric=val/acc_bset", "+trainer.limit_train_batches=1"
    )
    assert result["error"] == (
        "optimized_metric=val/acc_bset: validation does not log it (did you mean "
        "'val/acc_best'? it logs val/acc, val/acc_best, val/f1, val/loss)"
    )
    assert result["steps"] == 0
    assert "1 job, 0 completed, 1 failed" in (tmp_path / "summary.md").read_text()


def test_a_trial_whose_metric_diverged_fails_the_sweep(tmp_path, capsys, monkeypatch, data_dir):
    """A trial whose training loss stayed finite but whose optimized_metric did not (a head at
    lr 1e30: validation logits overflow): Optuna fails it, and so do its record and the sweep
    (was: completed with a null metric, exit 0)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    result = search_with_a_failing_trial(
        tmp_path,
        capsys,
        "hydra.sweeper.direction=minimize",
        "optimized_metric=val/loss",
        "model.freeze_backbone=true",
        "model.lr_head=1e30",
        "model.warmup_ratio=0",  # a step at lr 1e30 (a warm-up step would be at lr 0)
        "hydra.sweeper.enqueue_trials=[{model.lr_head:1e30}]",
        "+trainer.limit_train_batches=2",
    )
    assert result["error"] in (
        f"optimized_metric=val/loss is {value} (the run diverged): the search cannot rank it"
        for value in ("nan", "inf")
    )


def test_a_trial_pruned_on_a_diverged_metric_stays_pruned(tmp_path, data_dir):
    """Optuna's pruners prune a NaN: such a trial is pruned, not failed by the check above, and
    the sweep ends well."""
    sft_train_multirun(
        tmp_path,
        "hparams_search=cifar10_optuna",
        "hydra.sweeper.n_trials=1",
        *threshold_pruner(upper=1e9),
        "model.freeze_backbone=true",
        "model.lr_head=1e30",
        "model.warmup_ratio=0",  # a step at lr 1e30 (a warm-up step would be at lr 0)
        "hydra.sweeper.enqueue_trials=[{model.lr_head:1e30}]",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "trainer.max_epochs=2",
    )
    assert the_pruned_trial(tmp_path, "cifar10_optuna")["status"] == "pruned"


def test_a_trial_diverging_where_earlier_ones_did_is_pruned_without_numpys_warning(recwarn):
    """The median pruner over earlier trials that all reported NaN at a step: pruned, without
    numpy's raw `RuntimeWarning: All-NaN slice encountered` in the sweep's output (was: printed)."""
    study = optuna.create_study(
        pruner=optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0)
    )
    earlier = study.ask()
    earlier.report(float("nan"), 0)
    study.tell(earlier, 1.0)  # completed: the pruner compares with completed trials
    callback = OptunaPruning("unused", study.study_name, trial_number=1, monitor="val/loss")
    callback.trial = study.ask()
    trainer = SimpleNamespace(callback_metrics={"val/loss": torch.tensor(float("nan"))})
    assert callback._report(trainer, step=0)
    assert [str(w.message) for w in recwarn] == []


def test_the_samplers_own_seed_is_the_one_it_samples_with(tmp_path, capsys, data_dir):
    """`+hydra.sweeper.sampler.seed=123`, as hydra-optuna-sweeper's users set it, was replaced by
    the sweeper's seed (0)."""
    argv = ["sft-train", "-m", *TINY, "hparams_search=cifar10_optuna", "hydra.sweeper.n_trials=1"]
    argv += ["+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1"]
    argv += ["trainer.max_epochs=1", "hydra.sweeper.enqueue_trials=[]"]
    argv += ["hydra/sweeper/sampler=random", "+hydra.sweeper.sampler.seed=123"]
    sweep = tmp_path / "sweep"
    assert run_entry_point(main, [*argv, f"hydra.sweep.dir={sweep}"]) == 0, capsys.readouterr().err[
        -2000:
    ]
    (trial,) = load_study(sweep, "cifar10_optuna").trials
    expected = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=123))
    assert trial.params == expected.ask(trial.distributions).params


def test_a_searched_key_fixed_on_the_command_line_is_left_out_of_the_enqueued_trial(
    tmp_path, capsys, monkeypatch, data_dir
):
    """A plain value for a key the config searches goes to every trial, the enqueued one too
    (was: `error: hydra.sweeper.enqueue_trials: ['model.lr_head'] are not searched`, after the
    study had been made in the sweep directory)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    argv = ["sft-train", "-m", *TINY, "hparams_search=cifar10_optuna", "hydra.sweeper.n_trials=1"]
    argv += ["+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1"]
    argv += ["trainer.max_epochs=1"]
    sweep = tmp_path / "sweep"
    code = run_entry_point(main, [*argv, "model.lr_head=0.05", f"hydra.sweep.dir={sweep}"])
    assert code == 0, capsys.readouterr().err[-2000:]
    (trial,) = load_study(sweep, "cifar10_optuna").trials
    assert trial.params == {
        "model.lr_backbone": 1e-4,
        "model.reg_lambda": 0.1,
        "model.head.branch": "linear",
    }
    recorded = json.loads((sweep / "0" / "result.json").read_text())["overrides"]
    assert "model.lr_head=0.05" in recorded and "model.lr_backbone=0.0001" in recorded

    # a key neither searched nor set is still refused, before the study is made
    other = tmp_path / "other"
    enqueue = "hydra.sweeper.enqueue_trials=[{model.lr_hed:0.1}]"
    code = run_entry_point(main, [*argv, enqueue, f"hydra.sweep.dir={other}"])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: hydra.sweeper.enqueue_trials: ['model.lr_hed'] are not searched"
    )
    assert not other.exists()


def test_a_study_rerun_with_other_fixed_overrides_is_refused(tmp_path, capsys, monkeypatch):
    """The same study re-run with data.samples_per_class=20 instead of 10 added its trials to
    the first run's without a word, as if they were alike (n_trials=0: the study alone)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    argv = ["sft-train", "-m", *TINY, "hparams_search=cifar10_optuna", "hydra.sweeper.n_trials=0"]
    argv.append(f"hydra.sweep.dir={tmp_path}")
    assert run_entry_point(main, argv) == 0
    # the study alone: its enqueued trial is not left waiting (was: `waiting: 1`)
    assert load_study(tmp_path, "cifar10_optuna").trials == []
    assert run_entry_point(main, argv) == 0  # the same settings: resumed
    # ... also written otherwise (was: refused, as `=cpu then, ='cpu' now`)
    respelled = [o.replace("accelerator=cpu", "accelerator='cpu'") for o in argv]
    assert run_entry_point(main, respelled) == 0, capsys.readouterr().err[-2000:]
    written = (tmp_path / "multirun.yaml").read_text()

    code = run_entry_point(main, [*argv, "data.samples_per_class=20", "model.lr_head=0.1"])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: study 'cifar10_optuna' in journal://{tmp_path / 'optuna.journal'} was run with "
        "other fixed overrides: data.samples_per_class=10 then, data.samples_per_class=20 "
        "model.lr_head=0.1 now; start a new study under another hydra.sweeper.study_name (or, "
        "with the default storage, in another hydra.sweep.dir): a re-run adds trials to a "
        "study only with the same fixed overrides"
    )
    assert (tmp_path / "multirun.yaml").read_text() == written

    # a study made before the overrides were recorded is resumed as it is
    storage = open_storage(f"journal://{tmp_path / 'earlier.journal'}")
    optuna.create_study(storage=storage, study_name="cifar10_optuna", direction="maximize")
    earlier = [*argv, f"hydra.sweeper.storage=journal://{tmp_path / 'earlier.journal'}"]
    assert run_entry_point(main, earlier) == 0


def a_batch_of_two_stopped_in_its_second_job(tmp_path, monkeypatch, stopping) -> None:
    """A search of 2 trials asked together (hydra.sweeper.n_jobs=2) whose launcher
    `stopping(launcher)` makes stop in job 1: trial 0 keeps its value, trial 1 fails."""
    from hydra.core.plugins import Plugins

    instantiate = Plugins.instantiate_launcher

    def stopping_launcher(self, *args, **kwargs):
        launcher = instantiate(self, *args, **kwargs)
        stopping(launcher)
        return launcher

    # (Hydra's plugin scan loads the launcher modules anew: their classes are not this test's)
    monkeypatch.setattr(Plugins, "instantiate_launcher", stopping_launcher)
    argv = ["sft-train", "-m", *TINY, "hparams_search=cifar10_optuna", "trainer.max_epochs=1"]
    argv += ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"]
    argv += ["+trainer.limit_train_batches=1", f"hydra.sweep.dir={tmp_path}"]
    with pytest.raises(KeyboardInterrupt):
        run_entry_point(main, argv)
    trials = load_study(tmp_path, "cifar10_optuna").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[0].value is not None


def test_a_trial_that_ended_before_its_batch_was_stopped_keeps_its_value(
    tmp_path, monkeypatch, data_dir
):
    """A signal stops a batch of two trials that run at once (hydra.sweeper.n_jobs=2 under
    local_jobs or ray) after one of them had ended: the launcher raises the other's stop with
    the ended job attached, and that trial keeps its value (was: both told FAIL)."""
    from sft.errors import ENDED_JOBS

    def at_once_stopped(launcher):
        # in the place of one that runs a batch's jobs at once (the basic launcher's are
        # launched one by one)
        launcher.__class__ = type("AtOnceLauncher", (type(launcher),), {})
        launch = launcher.launch

        def second_job_stopped(job_overrides, initial_job_idx):
            (ended,) = launch(job_overrides[:1], initial_job_idx)
            stop = KeyboardInterrupt()
            setattr(stop, ENDED_JOBS, {initial_job_idx: ended})
            raise stop

        launcher.launch = second_job_stopped

    a_batch_of_two_stopped_in_its_second_job(tmp_path, monkeypatch, at_once_stopped)


def test_a_trial_run_before_ctrl_c_in_a_batch_under_the_basic_launcher_keeps_its_value(
    tmp_path, monkeypatch, data_dir
):
    """hydra.sweeper.n_jobs=2 with Hydra's basic launcher, which runs a batch's jobs in turn:
    Ctrl-C in the second job lost the first's value (both told FAIL), as the launcher returns
    none of a launch it was stopped in."""

    def in_turn_stopped(launcher):
        launch = launcher.launch

        def in_turn_until_job_1(job_overrides, initial_job_idx):
            ended = []
            for number, overrides in enumerate(job_overrides, initial_job_idx):
                if number == 1:
                    raise KeyboardInterrupt
                ended += launch([overrides], number)
            return ended

        launcher.launch = in_turn_until_job_1

    a_batch_of_two_stopped_in_its_second_job(tmp_path, monkeypatch, in_turn_stopped)


def test_results_count_a_repeated_trial_apart_from_those_that_ran(tmp_path):
    """A trial that repeats finished parameters is told their result without running; the
    results file counted it complete (3 complete beside summary.md's 2 jobs)."""
    from hydra_plugins.sft_optuna_sweeper._sweep import repeat, write_results

    study = optuna.create_study(direction="maximize")
    space = build_search_space({}, ["+x=1,2"])
    for value in (0.5, 0.7):
        trial = study.ask(space.distributions)
        study.tell(trial, value)
    repeat(study, study.ask(space.distributions), 1)
    write_results(study, tmp_path / "results.yaml", "memory", space)
    results = OmegaConf.load(tmp_path / "results.yaml")
    assert dict(results.n_trials) == {"complete": 2, "repeated": 1}
    assert results.best_value == 0.7
    # as the best trial's job got it (was: x=..., which Hydra refuses for a key configs lack)
    assert list(results.best_overrides) == [f"+x={results.best_params.x}"]
