"""Every entry point composes and instantiates its parts for every option of every config group
it accepts (as lightning-hydra-template's tests/test_configs.py): datamodule, model, trainer,
callbacks and loggers, before any data is read. Backbones are swapped for tiny ones of the same
family, so the wiring (data <-> model <-> trainer) is what is checked, offline and fast."""

import fnmatch
import inspect
import re
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, EXPERIMENTS, compose_config
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class, instantiate
from inference_checkpoints import TINY_BERT, image_checkpoint, text_checkpoint
from omegaconf import DictConfig, OmegaConf

from sft.jobs.eval import data_config_for_checkpoint
from sft.models.backbones import backbone_speed_hints
from sft.utils.config import register_resolvers
from sft.utils.config_types import check_config_types
from sft.utils.hardware import resolve_auto_precision, uses_gpu
from sft.utils.instantiate import build_trainer, instantiate_callbacks, instantiate_loggers


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml") if p.stem[0] != "_")


TEXT_DATA = ["sst2", "sst5", "sst2_trees", "text_files", "hf_dataset"]
IMAGE_DATA = ["cifar10", "image_folder"]
assert sorted(TEXT_DATA + IMAGE_DATA) == options("data"), "a new data option: add it here"
TEXT_BASE = ["experiment=sst2_minilm"]
IMAGE_BASE = ["experiment=cifar10_effnet_lite0_quick"]
# tiny backbones of the same families: no weights are read, nothing is downloaded
TINY_TEXT = [
    "model.backbone.model_name_or_path=minilm",
    "model.backbone.pretrained=false",
    f"model.backbone.config_overrides={TINY_BERT}",
]
TINY_IMAGE = ["model.backbone.pretrained=false"]


def build_all(cfg: DictConfig) -> None:
    """What sft-train builds before fit, in its order, with its checks."""
    backbone = cfg.model.get("backbone")
    resolve_auto_precision(cfg.trainer, backbone_speed_hints(backbone).cpu_bf16)
    for key in ("data", "model", "trainer", "adapter"):
        check_config_types(cfg.get(key), key)
    datamodule = instantiate(cfg.data)
    assert hasattr(datamodule, "probe_dataloader")
    model = instantiate(cfg.model, adapter=cfg.get("adapter"))
    assert isinstance(model, torch.nn.Module)
    callbacks = instantiate_callbacks(
        cfg.get("callbacks"), progress_bar=cfg.trainer.get("enable_progress_bar", True)
    )
    loggers = instantiate_loggers(cfg.get("logger"))
    if uses_gpu(str(cfg.trainer.get("accelerator"))) and not torch.cuda.is_available():
        return  # trainer=gpu / ddp on a machine without one: composed and checked only
    build_trainer(cfg.trainer, callbacks=callbacks, logger=loggers)


def compose_train(overrides: list[str], tmp_path: Path) -> DictConfig:
    cfg = compose_config("train", overrides, tmp_path / "run")
    if "cache_dir" in cfg.data:  # text data: a token cache of the test's own
        cfg.data.cache_dir = str(tmp_path / "tokens")
    return cfg


def is_text(cfg: DictConfig) -> bool:
    return cfg.model.backbone.get("name") == "huggingface"


def tiny(cfg_overrides: list[str], tmp_path: Path) -> DictConfig:
    """The config with its backbone made tiny (text or image, by what it composes to)."""
    cfg = compose_train(cfg_overrides, tmp_path)
    return compose_train([*cfg_overrides, *(TINY_TEXT if is_text(cfg) else TINY_IMAGE)], tmp_path)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_builds(experiment, tmp_path):
    build_all(tiny([f"experiment={experiment}"], tmp_path))


@pytest.mark.parametrize(
    ("experiment", "data"),
    [
        (e, d)
        for e in EXPERIMENTS
        for d in (TEXT_DATA if "sst" in e else IMAGE_DATA)
        if d != "hf_dataset"  # its dataset name and columns are the user's to give
    ],
)
def test_every_experiment_builds_on_each_data_option_of_its_modality(experiment, data, tmp_path):
    """A recipe runs on the user's own data of the same kind (`experiment=cifar10_* data=
    image_folder`): the data settings an experiment sets are ones every such option takes."""
    build_all(tiny([f"experiment={experiment}", f"data={data}"], tmp_path))


@pytest.mark.parametrize(
    ("group", "option"),
    [
        (group, option)
        for group in ("data", "model", "trainer", "callbacks", "logger", "method", "adapter")
        for option in options(group)
    ],
)
def test_every_group_option_builds(group, option, tmp_path):
    if group == "data":  # a model of the data's modality, no experiment's data settings
        base = ["model=minilm_fused" if option in TEXT_DATA else "model=effnet_lite0_fused"]
    elif group == "model":
        base = TEXT_BASE if option in ("minilm_fused", "bert_base_fused") else IMAGE_BASE
    else:
        base = IMAGE_BASE
    build_all(tiny([*base, f"{group}={option}"], tmp_path))


@pytest.mark.parametrize("option", IMAGE_DATA)
def test_every_image_data_setting_is_in_its_config(option, tmp_path):
    """`data.<key>=` works for every setting of the datamodule, as the errors suggest them
    (was: image_folder lacked drop_last, which its batch-size error told users to set; only
    `+data.drop_last=false` worked). Text configs leave out other sources' options on purpose."""
    cfg = compose_train(["model=effnet_lite0_fused", f"data={option}"], tmp_path)
    settings = inspect.signature(get_class(cfg.data._target_)).parameters
    assert set(settings) <= set(cfg.data)


@pytest.mark.parametrize("option", options("model"))
def test_every_model_config_lists_the_optimisation_settings(option, tmp_path):
    """`model.<key>=` works for the settings every model takes (was: the image configs lacked
    layer_decay, which the README offers for timm models: only `+model.layer_decay=` worked)."""
    base = TEXT_BASE if option in ("minilm_fused", "bert_base_fused") else IMAGE_BASE
    cfg = compose_train([*base, f"model={option}"], tmp_path)
    settings = {"lr_backbone", "lr_head", "lr_adapter", "layer_decay", "weight_decay"}
    settings |= {"warmup_ratio", "label_smoothing", "regularizer", "reg_lambda"}
    assert settings <= set(cfg.model)


@pytest.mark.parametrize("option", options("debug"))
@pytest.mark.parametrize("base", [TEXT_BASE, IMAGE_BASE], ids=["text", "image"])
def test_every_debug_option_builds_for_text_and_images(option, base, tmp_path):
    build_all(tiny([*base, f"debug={option}"], tmp_path))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_debug_overfit_validates_once_in_a_few_epochs_in_every_experiment(experiment, tmp_path):
    """debug=overfit trains 3 batches an epoch: sst2_minilm's val_check_interval=0.25 made it
    validate after every batch (its whole dev set in one eval batch, at every step)."""
    cfg = compose_train([f"experiment={experiment}", "debug=overfit"], tmp_path)
    assert cfg.trainer.val_check_interval == 1.0
    assert cfg.trainer.check_val_every_n_epoch == 5


@pytest.mark.parametrize("accumulate", [[], ["+trainer.accumulate_grad_batches=3"]])
def test_a_study_validates_at_its_last_step_also_when_accumulating(accumulate, tmp_path):
    """_fixed_steps validated after max_steps batches, which Lightning counts: under
    accumulate_grad_batches=3 a study of 4 steps validated at steps 1 and 3, never on its final
    weights (what the study scores)."""
    study = ["experiment=study_sst2_label_efficiency", "trainer.max_steps=4", *accumulate]
    cfg = compose_train(study, tmp_path)
    assert cfg.trainer.val_check_interval == 4 * (3 if accumulate else 1)


@pytest.mark.parametrize("option", options("hparams_search"))
def test_every_search_space_composes(option, tmp_path):
    cfg = compose_train([f"hparams_search={option}"], tmp_path)
    assert cfg.optimized_metric


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("config_ckpts")
    return {"image": image_checkpoint(root), "text": text_checkpoint(root)}


@pytest.mark.parametrize(
    ("kind", "data"),
    [("text", d) for d in TEXT_DATA] + [("image", d) for d in IMAGE_DATA] + [("text", None)],
)
def test_eval_builds_for_every_data_option(kind, data, checkpoints, tmp_path):
    """`sft-eval ckpt_path=<text or image checkpoint> [data=<option>]`."""
    overrides = [f"ckpt_path={checkpoints[kind]}", *([f"data={data}"] if data else [])]
    cfg = compose_config("eval", overrides, tmp_path)
    checkpoint = torch.load(checkpoints[kind], weights_only=True)
    if data:
        data_cfg = data_config_for_checkpoint(cfg, checkpoint)
        check_config_types(data_cfg, "data")
        instantiate(data_cfg)
    resolve_auto_precision(cfg.trainer, False)
    check_config_types(cfg.trainer, "trainer")
    build_trainer(cfg.trainer, logger=instantiate_loggers(cfg.get("logger")))


@pytest.mark.parametrize("entry", ["predict", "export"])
def test_predict_and_export_compose(entry, checkpoints, tmp_path):
    extra = ["inputs=x.txt"] if entry == "predict" else []
    cfg = compose_config(entry, [f"ckpt_path={checkpoints['image']}", *extra], tmp_path)
    assert cfg.ckpt_path == str(checkpoints["image"])


def test_a_jobs_config_subdir_is_decided_once(tmp_path):
    """hydra.output_subdir of a multirun job (conf/hydra): `.hydra` for a new job directory,
    and the same answer after Hydra has saved the job's config there."""
    register_resolvers()
    cfg = OmegaConf.create({"out": str(tmp_path), "subdir": "${sft_config_subdir:${out}}"})
    assert cfg.subdir == ".hydra"
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("{}")
    assert cfg.subdir == ".hydra"
    again = OmegaConf.create({"out": str(tmp_path), "subdir": "${sft_config_subdir:${out}}"})
    assert again.subdir.startswith(".hydra/resumed_")  # a re-run job keeps the first record


# the groups a user chooses an option of on the command line; callbacks' and hydra's files are
# parts that conf/callbacks/default.yaml and the launchers combine
CHOSEN_GROUPS = ("data", "model", "trainer", "logger", "debug", "hparams_search", "experiment")


@pytest.mark.parametrize("group", [*CHOSEN_GROUPS, "method", "adapter"])
def test_the_readme_lists_every_option_of_a_group(group):
    """The README's table of config groups names every option (was: the method row lacked
    lora and lp_lora, the adapter group had no row, an experiment was missing)."""
    readme = (Path(CONF_DIR).parent / "README.md").read_text()
    row = next((line for line in readme.splitlines() if line.startswith(f"| `{group}` |")), None)
    assert row is not None, f"README: no row for the {group} group"
    listed = set(re.findall(r"`([\w*]+)`", row))
    unlisted = [
        o
        for o in options(group)
        if o not in listed
        and not any(fnmatch.fnmatch(o, pattern) for pattern in listed if "*" in pattern)
        and not (group == "debug" and o == "default")  # no debug: the default
    ]
    assert not unlisted, f"README's {group} row lacks {unlisted}"


def test_help_lists_each_groups_options_without_its_bases(capsys):
    """`sft-train --help` offered data's `_text` and experiment's `_fixed_steps`, bases other
    options include, which are refused when chosen."""
    from conftest import run_entry_point

    import sft.train

    assert run_entry_point(sft.train.main, ["sft-train", "--help"]) == 0
    page = capsys.readouterr().out
    groups = dict(
        line.split(": ", 1) for line in page.split("== Config ==")[0].splitlines() if ": " in line
    )
    for group in ("data", "experiment", "model", "method", "adapter", "trainer"):
        assert groups[group].split(", ") == options(group), group


@pytest.mark.parametrize(
    ("command", "groups"),
    [("eval", ["data", "logger", "paths", "trainer"]), ("predict", ["paths"])],
)
def test_help_lists_the_groups_its_command_chooses(command, groups, capsys):
    """`sft-predict --help` (and sft-eval's, sft-export's) listed every group of sft-train's,
    each of which the command refuses (`model=...: sft-predict takes the model ...`)."""
    import importlib

    from conftest import run_entry_point

    main = importlib.import_module(f"sft.{command}").main
    assert run_entry_point(main, [f"sft-{command}", "--help"]) == 0
    listed = capsys.readouterr().out.split("== Configuration groups ==")[1].split("== Config ==")
    assert [line.split(": ")[0] for line in listed[0].splitlines() if ": " in line] == groups


@pytest.mark.parametrize("variable", ["SFT_OUTPUT_DIR", "SFT_CACHE_DIR", "SFT_DATA_DIR"])
def test_a_path_variable_set_empty_is_unset(variable, monkeypatch):
    """`SFT_OUTPUT_DIR= sft-train ...` (a variable exported empty) made paths.log_dir '', and
    a run wrote its folders at the file system's root (/train, /debug, /tokens)."""
    key = {"SFT_OUTPUT_DIR": "log_dir", "SFT_CACHE_DIR": "cache_dir", "SFT_DATA_DIR": "data_dir"}
    monkeypatch.delenv(variable, raising=False)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        unset = compose(config_name="train").paths[key[variable]]
        monkeypatch.setenv(variable, "")
        empty = compose(config_name="train").paths[key[variable]]
        monkeypatch.setenv(variable, " ")
        blank = compose(config_name="train").paths[key[variable]]
        monkeypatch.setenv(variable, "/somewhere")
        given = compose(config_name="train").paths[key[variable]]
    assert empty == blank == unset and unset.startswith("/") and given == "/somewhere"


@pytest.mark.parametrize("command", ["train", "eval", "predict", "export"])
def test_help_says_what_the_command_does_and_its_examples_compose(command, capsys):
    """`--help` was Hydra's template alone ("train is powered by Hydra."): each command's page
    starts with what it does and commands to start from, and every one of them composes (its
    settings and options exist: `--cfg job` prints its config; a sweep's first value)."""
    import importlib
    import shlex

    from conftest import run_entry_point

    main = importlib.import_module(f"sft.{command}").main
    assert run_entry_point(main, [f"sft-{command}", "--help"]) == 0
    page = capsys.readouterr().out
    assert page.startswith(f"sft-{command}: "), page[:200]
    examples = [
        shlex.split(line.partition("#")[0])
        for line in page.split("== Configuration groups ==")[0].splitlines()
        if line.startswith(f"  sft-{command} ")
    ]
    assert len(examples) >= 2
    for example in examples:
        # placeholders (`<run>`, `...`) as a path
        args = [re.sub(r"<\w+>|\.\.\.", "x", a) for a in example[1:] if a not in ("-m", "--cfg")]
        args = [a.split(",")[0] for a in args if a != "job"] + ["--cfg", "job"]
        assert run_entry_point(main, [f"sft-{command}", *args]) == 0, (example, capsys.readouterr())
        assert "error:" not in capsys.readouterr().err, example


def test_early_stopping_follows_the_best_checkpoints_metric(tmp_path):
    """`callbacks.model_checkpoint.monitor=val/f1` (HF Trainer's metric_for_best_model) left
    early stopping on val/acc: a run stopped on a metric it did not rank by."""
    cfg = compose_config("train", ["callbacks.model_checkpoint.monitor=val/f1"], tmp_path)
    assert cfg.callbacks.early_stopping.monitor == "val/f1"
    assert cfg.callbacks.early_stopping.mode == "max"
    for others in (["callbacks=[early_stopping]"], ["callbacks.model_checkpoint.monitor=null"]):
        cfg = compose_config("train", others, tmp_path)
        assert cfg.callbacks.early_stopping.monitor == "val/acc"
    cfg = compose_config("train", ["callbacks.model_checkpoint.monitor=step"], tmp_path)
    assert cfg.callbacks.early_stopping.monitor == "val/acc"
