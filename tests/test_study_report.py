"""experiments/label_efficiency/report.py: what its report says the scores were measured on, and
where it writes."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPORT = Path(__file__).parents[1] / "experiments" / "label_efficiency" / "report.py"


def load_report():
    spec = importlib.util.spec_from_file_location("label_efficiency_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def job(report, limit):
    config = {"trainer": {"limit_val_batches": limit}}
    return report.Job("a", "lora", 10, 0, "completed", 0.5, 1.0, None, Path("x"), config)


def test_a_limited_validation_is_not_reported_as_the_whole_split():
    """Jobs run with trainer.limit_val_batches=2 scored 64 dev sentences; the report said "the
    full GLUE SST-2 dev set"."""
    report = load_report()
    study = report.STUDIES["sst2"]
    assert report.evaluated_on(study, [job(report, None)]) == study.evaluated_on
    assert report.evaluated_on(study, [job(report, None), job(report, 2)]) == (
        "part of the full GLUE SST-2 dev set (trainer.limit_val_batches=2)"
    )


def test_sweeps_of_ones_own_need_their_own_output_folder(tmp_path):
    """--sweeps without --out replaced the study's published report without a word."""
    result = subprocess.run(
        [sys.executable, str(REPORT), "sst2", "--sweeps", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: --sweeps of your own need --out <folder> for their report"
    )


def test_jobs_of_one_arm_and_size_are_one_setup_over_seeds():
    """Two runs of seed 0 of one arm and size, at 4 steps and at 1, were averaged as n=2 (and
    the budget table said 4 steps): a repeated seed, or a setting other than the seed that
    differs, is one error line."""
    report = load_report()

    def run(seed, steps, folder):
        config = {"seed": seed, "trainer": {"max_steps": steps}, "data": {"seed": "${seed}"}}
        return report.Job("a", "lora", 16, seed, "completed", 0.6, 1.0, None, Path(folder), config)

    report.check_one_setup_per_arm([run(0, 4, "s/0"), run(1, 4, "s/1"), run(2, 4, "s/2")])
    # a job that failed (no score) beside its rerun: listed as failed, not pooled
    failed = run(0, 1, "old/0")
    failed.status, failed.score = "interrupted", None
    report.check_one_setup_per_arm([failed, run(0, 4, "s/0")])
    with pytest.raises(SystemExit) as err:
        report.check_one_setup_per_arm([run(0, 4, "s/0"), run(0, 1, "o/0")])
    assert str(err.value) == (
        "error: s/0 and o/0 are both a at 16 labels per class with seed 0: report one of them "
        "(--sweeps)"
    )
    with pytest.raises(SystemExit) as err:
        report.check_one_setup_per_arm([run(0, 4, "s/0"), run(1, 1, "o/1")])
    assert str(err.value) == (
        "error: s/0 and o/1 are both a at 16 labels per class but differ in trainer.max_steps "
        "(4 vs 1): a mean over them is not one setup's; report them apart (--sweeps, --out)"
    )


def test_the_reports_command_reproduces_its_own_sweeps_and_folder(tmp_path):
    """The Commands section of a report of one's own sweeps gave the study's own command,
    which reports the study's sweeps into the study's folder."""
    report = load_report()
    assert report.report_command("sst2", None, None) == (
        "python experiments/label_efficiency/report.py sst2"
    )
    sweeps = [report.ROOT / "outputs" / "mine", tmp_path / "b c"]
    assert report.report_command("sst2", None, tmp_path / "out") == (
        f"python experiments/label_efficiency/report.py sst2 --out {tmp_path / 'out'}"
    )
    assert report.report_command("sst2", sweeps, tmp_path / "out") == (
        "python experiments/label_efficiency/report.py sst2 --sweeps outputs/mine "
        f"'{tmp_path / 'b c'}' --out {tmp_path / 'out'}"
    )


def test_the_answer_compares_the_arms_seed_by_seed(tmp_path):
    """A job missing from one arm (killed, its record never written): the answer compared the
    fused arm's mean over seed 0 with fine-tuning's over seeds 0 and 1, other subsets; it now
    compares the seeds both arms completed, and names the one left out. The CIFAR-10 split's
    name was cut at 10,000's comma."""
    report = load_report()

    def run(method, seed, score):
        config = {"seed": seed, "trainer": {"limit_test_batches": 1}}
        return report.Job("a", method, 4, seed, "completed", score, 1.0, None, tmp_path, config)

    jobs = [run("finetune_linear", 0, 0.60), run("finetune_linear", 1, 0.50)]
    jobs.append(run("lpft_fused", 0, 0.55))
    (line,) = report.answer(jobs)
    assert "4/class -0.0500 (n=1); equal or better at 0 of 1 sizes." in line
    assert line.endswith("Left out, run by one arm only: 4/class seed 1.")
    # a size one arm did not run (the whole set, by design) is not a job left out, and a
    # from-scratch arm is not compared with the pretrained one
    whole = report.ALL
    jobs.append(
        report.Job("a", "finetune_linear", whole, 0, "completed", 0.9, 1.0, None, tmp_path, {})
    )
    scratch = "ResNet-18 from scratch, linear head"
    jobs.append(
        report.Job(scratch, "finetune_linear", 4, 1, "completed", 0.1, 1.0, None, tmp_path, {})
    )
    (line,) = report.answer(jobs)
    assert line.endswith("Left out, run by one arm only: 4/class seed 1.")
    study = report.STUDIES["cifar10"]
    assert report.evaluated_on(study, jobs[:3]) == (
        "part of the 10,000 CIFAR-10 test images (trainer.limit_test_batches=1)"
    )


def test_arms_of_one_study_share_their_data(tmp_path):
    """One method's sweep given data.val_size=2000 (another pool for CIFAR-10's subsets) and
    another part of the test split was compared with the others without a word."""
    report = load_report()

    def run(method, folder, data, limit=1):
        config = {"seed": 0, "data": data, "trainer": {"limit_test_batches": limit}}
        path = tmp_path / folder
        return report.Job("a", method, 4, 0, "completed", 0.5, 1.0, None, path, config)

    base = {"samples_per_class": 4, "val_size": 1000}
    alike = [run("finetune_linear", "a", base), run("lpft_fused", "b", {**base, "seed": 3})]
    report.check_one_study(alike)  # the subset's seed is the job's own
    for other, key in (
        (run("lpft_fused", "c", {**base, "val_size": 2000}), "data.val_size"),
        (run("lpft_fused", "d", base, limit=2), "trainer.limit_test_batches"),
    ):
        with pytest.raises(SystemExit) as err:
            report.check_one_study([alike[0], other])
        assert str(err.value).startswith(
            f"error: {tmp_path / 'a'} and {other.output_dir} differ in {key}"
        )
