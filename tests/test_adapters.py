"""LoRA adapters (adapter=lora): start at the pretrained model, train alone with the head, merge
back exactly, resume exactly, and save small checkpoints that check their base weights."""

import copy
import logging

import pytest
import torch
from conftest import EFFNET_ONE_BATCH, compose_config, logs_warning
from helpers.tiny_models import TINY_BERT_OVERRIDES
from hydra.utils import instantiate
from inference_checkpoints import image_checkpoint, text_checkpoint

from sft.callbacks import BackboneUnfreeze
from sft.errors import SFTError
from sft.inference.bundle import load_bundle
from sft.inference.deployable import folded_head
from sft.jobs.eval import evaluate
from sft.jobs.train import train
from sft.models import SFTClassifier, load_classifier
from sft.models.adapters import (
    LoraSettings,
    adapter_layers,
    add_lora,
    is_adapter_parameter,
    merge_adapters,
)
from sft.models.backbones import create_backbone
from sft.models.classifier import check_decoupled_pull
from sft.utils.checkpoint_io import read_checkpoint

TINY = TINY_BERT_OVERRIDES
SMALL_CNN = {"_target_": "sft.models.backbones.create_backbone", "name": "small_cnn", "width": 8}
LORA = {"_target_": "sft.models.adapters.LoraSettings", "r": 4}


def sentences(data_dir, n=6):
    lines = (data_dir / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1 : n + 1]
    return [line.split("\t")[0] for line in lines]


@pytest.fixture(scope="module")
def tiny_bert_inputs(data_dir):
    from transformers import AutoTokenizer

    from sft.hub import resolve_model_name

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name("minilm"))
    return dict(tokenizer(sentences(data_dir), padding=True, return_tensors="pt"))


def real_images(data_dir, n=8):
    from sft.data.cifar10 import FOLDER, load_batch

    images, _ = load_batch(data_dir / FOLDER / "test_batch")
    return images[:n].float() / 255


def test_step_zero_outputs_equal_the_pretrained_backbone(tiny_bert_inputs, data_dir):
    torch.manual_seed(0)
    text = create_backbone("huggingface", model_name_or_path="minilm", config_overrides=TINY)
    image = create_backbone("efficientnet_lite0", pretrained=True, input_size=64)
    for backbone, inputs, kwargs in (
        (text.eval(), (), tiny_bert_inputs),
        (image.eval(), (real_images(data_dir),), {}),
    ):
        reference = copy.deepcopy(backbone)
        add_lora(backbone, LoraSettings(r=8, dropout=0.1), "test")
        with torch.no_grad():
            diff = (backbone(*inputs, **kwargs) - reference(*inputs, **kwargs)).abs().max()
        assert diff <= 1e-6
        assert any("lora_B" in n for n, _ in backbone.named_parameters())


def test_default_targets_are_attention_ffn_and_plain_convolutions():
    bert = create_backbone("huggingface", model_name_or_path="minilm", config_overrides=TINY)
    add_lora(bert, LoraSettings(), "huggingface")
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in bert.named_parameters() if ".lora_A." in n}
    layer0 = {n.split("layer.0.", 1)[1] for n in adapted if "layer.0." in n}
    assert layer0 == {
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    }
    mobilenet = create_backbone("mobilenetv2")
    add_lora(mobilenet, LoraSettings(), "mobilenetv2")
    for module in mobilenet.modules():
        if hasattr(module, "lora_A"):
            assert module.get_base_layer().groups == 1  # depthwise convolutions are left alone


def test_only_adapters_and_head_train_at_their_own_rate():
    model = SFTClassifier(
        backbone=SMALL_CNN, num_classes=10, adapter=LORA, lr_adapter=0.02, lr_head=0.5
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") or "lora_" in n for n in trainable)
    assert any("lora_" in n for n in trainable)
    trainable_count, total = model.parameter_counts()
    assert trainable_count == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable_count < total / 2
    model.trainer = None
    groups = {g["name"]: g["lr"] for g in model.configure_optimizers()["optimizer"].param_groups}
    assert groups["adapter"] == 0.02 and groups["head"] == 0.5
    assert not any(name.startswith("backbone") for name in groups)
    # L2-SP over what trains: the adapters (B starts at 0: B A is pulled back towards 0)
    l2sp = SFTClassifier(backbone=SMALL_CNN, num_classes=10, adapter=LORA, regularizer="l2sp")
    assert l2sp.regularizer.names and all("lora_" in n for n in l2sp.regularizer.names)


def test_eval_of_a_lora_checkpoint(tmp_path, data_dir):
    ckpt = image_checkpoint(tmp_path / "ckpts", lora=True)
    cfg = compose_config(
        "eval", [f"ckpt_path={ckpt}", "trainer.accelerator=cpu"], tmp_path / "eval"
    )
    metrics = evaluate(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert (tmp_path / "eval" / "predictions.csv").is_file()


def test_merged_backbone_and_folded_head_equal_the_adapter_model(data_dir, tmp_path):
    """A trained LoRA checkpoint (adapters moved away from 0): merged + folded == as trained."""
    bundle = load_bundle(image_checkpoint(tmp_path / "ckpts", lora=True))
    moved = [p for n, p in bundle.model.backbone.named_parameters() if "lora_B" in n]
    assert moved and any(p.abs().max() > 0 for p in moved)
    x = bundle.image_inputs((real_images(data_dir, 16) * 255).to(torch.uint8))
    with torch.no_grad():
        expected = bundle.model(x)
        merged = merge_adapters(copy.deepcopy(bundle.model.backbone))
        got = folded_head(bundle)(merged(x))
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert (got - expected).abs().max() <= 1e-5

    text = load_bundle(text_checkpoint(tmp_path / "ckpts", lora=True))
    batch = text.collate(text.tokenize(sentences(data_dir)))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        expected = text.model(inputs)
        merged = merge_adapters(copy.deepcopy(text.model.backbone))
        got = folded_head(text)(merged(**inputs))
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        ({"r": 0}, "adapter.r: expected an integer > 0, got 0"),
        ({"r": 2.0}, "adapter.r: expected an integer > 0, got 2.0"),
        (
            {"target_modules": ["features.0", "nothing_here"]},
            "'nothing_here' match(es) no module of backbone 'small_cnn'; its modules (",
        ),
        # one string is a whole-name regular expression: said so, with the list that matches
        # name ends (was: only the names, the layer among them)
        (
            {"target_modules": "conv"},
            "'conv' match(es) no module of backbone 'small_cnn' (one string is a regular "
            "expression over whole module names, as peft reads it: a list, [conv], matches "
            "names ending in it); its modules (",
        ),
        ({"bias": "some"}, "adapter.bias: expected one of 'none', 'all', 'lora_only', got 'some'"),
        # were: a run whose adapters could never change the output (alpha 0), peft's wording,
        # a module's whole repr
        ({"alpha": 0}, "adapter.alpha: expected a float > 0, got 0"),
        ({"alpha": -4}, "adapter.alpha: expected a float > 0, got -4"),
        ({"target_modules": []}, "adapter.target_modules is empty: name the layers to adapt"),
        (
            {"target_modules": ["features.1"]},
            "adapter.target_modules matches a BatchNorm2d, which LoRA cannot wrap",
        ),
    ],
)
def test_adapter_mistakes_are_one_line(adapter, message):
    with pytest.raises(SFTError) as err:
        SFTClassifier(backbone=SMALL_CNN, num_classes=10, adapter={**LORA, **adapter})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_target_lists_the_first_20_modules_and_their_count():
    bert = create_backbone("huggingface", model_name_or_path="minilm", config_overrides=TINY)
    names = [n for n, _ in bert.named_modules() if n]
    with pytest.raises(SFTError) as err:
        add_lora(bert, LoraSettings(target_modules=["querry"]), "huggingface")
    message = str(err.value)
    assert f"its modules ({len(names)}): {', '.join(names[:20])}, ..." in message
    assert names[20] not in message.split(": ", 1)[1].split(", ")


def test_adapters_need_a_trainable_backbone_and_layers_to_adapt():
    with pytest.raises(
        SFTError,
        match=r"but it is frozen \(model\.freeze_backbone=true, as method=linear_probe sets\): for LoRA, method=lora or lp_lora",
    ):
        SFTClassifier(backbone=SMALL_CNN, num_classes=10, adapter=LORA, freeze_backbone=True)
    with pytest.raises(SFTError, match="'pooling' has no Linear or Conv2d layer whose adapter"):
        add_lora(torch.nn.AdaptiveAvgPool2d(1), LoraSettings(), "pooling")


def test_gradual_unfreezing_and_adapters_do_not_combine():
    model = SFTClassifier(backbone=SMALL_CNN, num_classes=10, adapter=LORA)
    with pytest.raises(SFTError, match="backbone_unfreeze and adapter=lora do not combine"):
        BackboneUnfreeze().on_fit_start(None, model)


def test_layer_decay_scales_the_adapters_by_depth():
    backbone = {
        "_target_": "sft.models.backbones.create_backbone",
        "name": "huggingface",
        "model_name_or_path": "minilm",
        "config_overrides": TINY,
    }
    model = SFTClassifier(
        backbone=backbone, num_classes=2, adapter=LORA, lr_adapter=1e-3, layer_decay=0.5
    )
    model.trainer = None
    groups = {g["name"]: g["lr"] for g in model.configure_optimizers()["optimizer"].param_groups}
    # 2 layers: layer k (1, 2) of the adapters trains at 1e-3 * 0.5 ** (3 - k)
    assert groups["adapter/layer_01"] == pytest.approx(1e-3 * 0.25)
    assert groups["adapter/layer_02"] == pytest.approx(1e-3 * 0.5)
    assert not any(name.startswith("backbone") for name in groups)


def test_an_adapter_learning_rate_of_zero_is_kept():
    model = SFTClassifier(backbone=SMALL_CNN, num_classes=10, adapter=LORA, lr_adapter=0.0)
    model.trainer = None
    groups = {g["name"]: g["lr"] for g in model.configure_optimizers()["optimizer"].param_groups}
    assert groups["adapter"] == 0.0


def test_config_type_errors_name_the_adapter_key(train_cfg):
    with pytest.raises(SFTError, match=r"adapter\.r: expected an integer > 0, got 'eight'"):
        train(train_cfg("adapter=lora", "adapter.r=eight"))


LORA_RUN = ["adapter=lora", "adapter.r=4", "model.lr_adapter=0.01"]
EXACT = [
    "trainer.deterministic=true",
    "trainer.max_epochs=2",
    "callbacks.step_checkpoint.every_n_train_steps=2",
    "test=false",
]


def test_lora_run_resumes_exactly_from_a_small_checkpoint(train_cfg, tmp_path, data_dir, caplog):
    """save_only_trainable: the checkpoint holds adapters and head only (and checks the base
    weights it resumes on); a crashed run resumed from it ends with the uninterrupted weights."""
    from helpers.faults import Crash

    small = [*LORA_RUN, "adapter.save_only_trainable=true"]
    # small_cnn's base weights are random: said at the start (was: silent until sft-predict),
    # and that the adapters train on frozen random weights (was: without a word)
    with logs_warning(caplog, r"only a process seeded like this run rebuilds"):
        train(train_cfg(*EXACT, *small, run_dir=tmp_path / "reference"))
    assert "adapters on a backbone that loads no weights" in caplog.text
    run_dir = tmp_path / "run"
    crash = ["+callbacks.crash._target_=helpers.faults.CrashAtStep", "+callbacks.crash.step=7"]
    with pytest.raises(Crash):
        train(train_cfg(*EXACT, *small, *crash, run_dir=run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert not any(".base_layer." in k for k in saved["state_dict"])
    assert "base_weights" in saved and any("lora_B" in k for k in saved["state_dict"])
    # without adapter=lora: said so (was: "does not fit this run's model (another setup): it
    # lacks backbone.conv1.weight, ...")
    with pytest.raises(
        SFTError, match=r"was trained with adapters \(\{.*'r': .*\}\): add adapter=lora"
    ):
        train(train_cfg(*EXACT, f"ckpt_path={last}", run_dir=tmp_path / "plain"))
    # other adapter settings: named (was: the optimizer's "different number of parameter
    # groups" traceback; a changed alpha continued as another function without a word)
    for other, named in (
        ("adapter.train_norms=true", r"adapter\.train_norms=False \(this run: True\)"),
        ("adapter.alpha=64", r"adapter\.alpha=16 \(this run: 64\)"),
    ):
        with pytest.raises(SFTError, match=rf"was trained with {named}: continue it with"):
            train(train_cfg(*EXACT, *small, other, f"ckpt_path={last}", run_dir=tmp_path / "o"))
    train(train_cfg(*EXACT, *small, f"resume={run_dir}", run_dir=run_dir))
    want = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(last, weights_only=True)
    assert want["state_dict"].keys() == got["state_dict"].keys()
    for key, tensor in want["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][key], tensor, rtol=0, atol=1e-6, msg=key)


def test_a_small_checkpoint_of_a_bf16_true_run_resumes(train_cfg, tmp_path, data_dir):
    """trainer.precision=bf16-true casts the base weights before the first save: the small
    checkpoint recorded the hash of the rounded weights, and every reader (resume=, sft-eval,
    sft-predict, sft-export), rebuilding them in fp32, refused it ("base weights ... differ")."""
    small = [*LORA_RUN, "adapter.save_only_trainable=true", "trainer.precision=bf16-true"]
    run_dir = tmp_path / "run"
    # its own test reads its best small checkpoint after the fit cast the base weights (was:
    # refused as other base weights)
    one_epoch = ["trainer.max_epochs=1", "+trainer.limit_test_batches=1"]
    assert "test/acc" in train(train_cfg(*small, *one_epoch, run_dir=run_dir))
    steps = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    train(train_cfg(*small, "trainer.max_epochs=2", "test=false", f"resume={run_dir}"))
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2 * steps


def test_a_run_from_a_small_checkpoint_may_save_whole_ones(train_cfg, tmp_path, data_dir):
    """resume= (or ckpt_path=) of a small checkpoint with adapter.save_only_trainable=false, a
    change the settings check allows: Lightning's strict load listed every base weight as
    missing, in a traceback, and the run's record turned from completed to failed."""
    run_dir = tmp_path / "run"
    small = [*LORA_RUN, "adapter.save_only_trainable=true", "test=false"]
    train(train_cfg(*small, "+trainer.max_steps=2", run_dir=run_dir))
    whole = [*LORA_RUN, "adapter.save_only_trainable=false", "test=false"]
    train(train_cfg(*whole, "+trainer.max_steps=4", f"resume={run_dir}"))
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 4 and "base_weights" not in saved
    assert any(".base_layer." in k for k in saved["state_dict"])


def test_a_whole_checkpoint_continued_as_small_ones_needs_its_base_weights(
    train_cfg, tmp_path, data_dir
):
    """A whole checkpoint continued with adapter.save_only_trainable=true on base weights other
    than its own (small_cnn's random ones, another seed): the small checkpoints named the
    weights this run built, so every reader applied the adapters to them without a word."""
    run_dir = tmp_path / "run"
    whole = [*LORA_RUN, "test=false"]
    train(train_cfg(*whole, "+trainer.max_steps=2", run_dir=run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    small = [*whole, "adapter.save_only_trainable=true", "+trainer.max_steps=4"]
    with pytest.raises(SFTError, match=r"base weights differ from those this run's backbone"):
        train(train_cfg(*small, "seed=1", f"ckpt_path={last}", run_dir=tmp_path / "other"))
    train(train_cfg(*small, f"ckpt_path={last}", run_dir=tmp_path / "same"))  # its own: goes


def test_a_checkpoint_without_adapters_under_adapter_lora_points_to_its_backbone(
    train_cfg, tmp_path
):
    """ckpt_path= of a run trained without adapters, with adapter=lora: the error listed the
    LoRA weights the checkpoint lacks, without saying why; now it says so, and how to put
    adapters on its weights, which works."""
    plain = tmp_path / "plain"
    train(train_cfg("+trainer.max_steps=2", "test=false", run_dir=plain))
    last = plain / "checkpoints" / "last.ckpt"
    with pytest.raises(SFTError, match=r"was trained without adapters, and this run adds them"):
        train(train_cfg(*LORA_RUN, f"ckpt_path={last}", run_dir=tmp_path / "lora"))
    with pytest.raises(SFTError) as refused:
        train(train_cfg(*LORA_RUN, f"resume={plain}", run_dir=plain))
    hint = str(refused.value).split("; to train adapters on its weights, start ")[1]
    override = next(w for w in hint.split() if w.startswith("+model.backbone.checkpoint="))
    assert override == f"+model.backbone.checkpoint={last}"

    config = train_cfg(*LORA_RUN, override)
    model = instantiate(config.model, adapter=config.adapter)
    trained = torch.load(last, weights_only=True)["state_dict"]
    for name, weight in model.backbone.state_dict().items():
        base = f"backbone.{name.replace('.base_layer', '')}"
        if "lora_" not in name:
            torch.testing.assert_close(weight, trained[base], rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_small_checkpoint_round_trip_and_base_weight_check(tmp_path, data_dir, capsys):
    """Packaged EfficientNet-Lite0 + LoRA: the small checkpoint is a fraction of the full one,
    sft-eval's loader rebuilds the same model from it, and other base weights are refused."""
    overrides = [*EFFNET_ONE_BATCH, *LORA_RUN]
    sizes, models = {}, {}
    for small in (False, True):
        run = tmp_path / f"small_{small}"
        train(compose_config("train", [*overrides, f"adapter.save_only_trainable={small}"], run))
        (path,) = (run / "checkpoints").glob("*.ckpt")
        sizes[small], models[small] = path.stat().st_size, load_classifier(path)
        checkpoint = read_checkpoint(path)
    print(f"checkpoint sizes: full {sizes[False]:,} B, adapters + head {sizes[True]:,} B")
    assert sizes[True] < 0.2 * sizes[False]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # the same base weights, each model's own adapters: both load whole
        for model in models.values():
            assert model(x).shape == (2, 10)
    checkpoint["base_weights"]["sha256"] = "0" * 64
    torch.save(checkpoint, tmp_path / "other_base.ckpt")
    with pytest.raises(
        SFTError, match="base weights of backbone 'efficientnet_lite0' found here differ"
    ):
        load_classifier(tmp_path / "other_base.ckpt")


EFFNET = {"_target_": "sft.models.backbones.create_backbone", "name": "efficientnet_lite0"}


def test_an_adapter_on_a_depthwise_convolution_is_refused_before_training():
    """A depthwise convolution named as a target with r divisible by its groups trained, and
    then sft-export failed with peft's NotImplementedError traceback: its adapter cannot be
    merged."""
    adapter = {**LORA, "r": 32, "target_modules": ["blocks.0.0.conv_dw"]}
    with pytest.raises(SFTError, match=r"a grouped \(depthwise\) convolution \(groups=32\)"):
        SFTClassifier(backbone=EFFNET, num_classes=10, adapter=adapter)


def test_convolutions_of_their_own_are_not_adapted():
    """timm's weight-standardised StdConv2d (BiT, NFNet) computes with a function of its
    weight, so an adapter's B A would train but not merge: the default targets leave it out,
    and naming it is one line (was, under peft 0.22's SAME-padding fix: adapted, then
    sft-export's parity check failed)."""
    from timm.layers import StdConv2d

    model = torch.nn.Sequential(StdConv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 1))
    add_lora(model, LoraSettings(r=2), "bit_like")
    assert adapter_layers(model) == ["1"]
    with pytest.raises(SFTError, match=r"matches 0, a StdConv2d of backbone 'bit_like', a conv"):
        add_lora(
            torch.nn.Sequential(StdConv2d(3, 8, 3)), LoraSettings(target_modules=["0"]), "bit_like"
        )


def test_dora_trains_a_channels_last_cnn():
    """adapter.use_dora=true failed on every channels_last CNN (the image models' default):
    peft's DoRA reshapes its conv adapters' weights with .view, which a channels_last weight
    refuses."""
    adapter = {**LORA, "use_dora": True}
    model = SFTClassifier(backbone=SMALL_CNN, num_classes=10, adapter=adapter, channels_last=True)
    images = torch.rand(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    model(images).sum().backward()
    assert any(p.grad is not None for n, p in model.named_parameters() if "magnitude" in n)


def test_modules_to_save_train_whole_beside_the_adapters():
    """adapter.modules_to_save, peft's option: named backbone modules train whole at
    lr_backbone, the default targets leave them out, and a module named as a target too, or a
    name that matches nothing, is one line (was: no such setting)."""
    backbone = {
        "_target_": "sft.models.backbones.create_backbone",
        "name": "huggingface",
        "model_name_or_path": "minilm",
        "config_overrides": TINY,
    }
    adapter = {**LORA, "modules_to_save": ["layer.1.output"]}
    model = SFTClassifier(backbone=backbone, num_classes=2, adapter=adapter, lr_backbone=0.01)
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    whole = [n for n in trainable if ".layer.1.output." in n]
    assert {n.rpartition("layer.1.output.")[2] for n in whole} == {
        "dense.weight",
        "dense.bias",
        "LayerNorm.weight",
        "LayerNorm.bias",
    }
    assert all(is_adapter_parameter(n) for n in trainable if n not in whole)
    assert any("layer.1.intermediate.dense.lora_A" in n for n in trainable)  # adapted still
    model.trainer = None
    groups = model.configure_optimizers()["optimizer"].param_groups
    own = [g for g in groups if g["name"].startswith("backbone")]  # weights, then no-decay ones
    assert {g["lr"] for g in own} == {0.01}
    assert sum(len(g["params"]) for g in own) == len(whole)

    with pytest.raises(SFTError, match=r"^adapter\.modules_to_save: 'nothing' match\(es\) no"):
        SFTClassifier(
            backbone=backbone, num_classes=2, adapter={**adapter, "modules_to_save": ["nothing"]}
        )
    both = {**adapter, "target_modules": ["dense"]}
    with pytest.raises(SFTError, match=r"hold\(s\) adapters too \(adapter\.target_modules\)"):
        SFTClassifier(backbone=backbone, num_classes=2, adapter=both)


def test_same_padded_convolutions_take_adapters_that_pad_as_they_do_and_merge():
    """timm's Conv2dSame (EfficientNet-Lite's strided convolutions) takes no padding_mode, which
    peft 0.22 passes when it builds a conv adapter's A: adapter=lora failed on
    EfficientNet-Lite0."""
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    model = torch.nn.Sequential(Conv2dSame(3, 8, 3, stride=2), torch.nn.ReLU())
    reference = copy.deepcopy(model)
    add_lora(model, LoraSettings(r=2), "same_padded")
    layer = model[0]
    assert type(layer.get_base_layer()) is Conv2dSame  # its own class back after injection
    assert type(layer.lora_A["default"]) is Conv2dSame  # pads as the base does
    # DoRA with dropout convolves through _conv_forward, without the SAME padding
    with pytest.raises(SFTError, match=r"^adapter\.use_dora=true with adapter\.dropout=0\.1: "):
        same = torch.nn.Sequential(Conv2dSame(3, 8, 3, stride=2))
        add_lora(same, LoraSettings(r=2, use_dora=True, dropout=0.1), "same_padded")
    torch.nn.init.normal_(layer.lora_B["default"].weight)
    x = torch.randn(2, 3, 15, 16)  # SAME pads the two sides differently
    with torch.no_grad():
        adapted = model(x)
        merged = merge_adapters(copy.deepcopy(model))
        assert type(merged[0]) is Conv2dSame
        assert (merged(x) - adapted).abs().max() <= 1e-5
        assert (adapted - reference(x)).abs().max() > 1e-3


def test_an_adapter_config_of_ones_own_may_leave_out_settings():
    """An adapter config without `r` (its default) was a KeyError('r') traceback."""
    adapter = {"_target_": "sft.models.adapters.LoraSettings", "alpha": 8}
    model = SFTClassifier(backbone=SMALL_CNN, num_classes=10, adapter=adapter)
    assert any(is_adapter_parameter(n) for n, _ in model.named_parameters())


class T5StyleNorm(torch.nn.Module):
    """An RMS norm of another library (transformers' T5LayerNorm is a plain Module)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class T5LayerNorm(T5StyleNorm):
    pass


def test_train_norms_trains_rms_norms_of_other_libraries_and_all_linear_targets_linears(caplog):
    """adapter.train_norms=true trained no norm of a T5-style encoder (its RMS norms are plain
    Modules) without a word; peft's `all-linear` was refused as a regular expression."""
    backbone = torch.nn.Sequential(
        torch.nn.Linear(4, 4), T5LayerNorm(4), torch.nn.RMSNorm(4), torch.nn.Linear(4, 4)
    )
    add_lora(backbone, LoraSettings(target_modules="all-linear", train_norms=True), "t5ish")
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert {"1.weight", "2.weight"} <= trainable
    assert {n.split(".")[0] for n in trainable if "lora_" in n} == {"0", "3"}
    # exactly the Linear layers: a list of their names matched name ends, so a Linear `proj`
    # took a Conv2d `block.proj` too
    named_alike = torch.nn.Module()
    named_alike.block = torch.nn.Module()
    named_alike.block.proj = torch.nn.Conv2d(3, 3, 1)
    named_alike.proj = torch.nn.Linear(3, 3)
    add_lora(named_alike, LoraSettings(target_modules="all-linear"), "named_alike")
    assert hasattr(named_alike.proj, "lora_A") and not hasattr(named_alike.block.proj, "lora_A")
    # a norm's own scale trains, not the weights of a layer inside it
    norm_with_child = T5LayerNorm(4)
    norm_with_child.inner = torch.nn.Linear(4, 4)
    holder = torch.nn.Sequential(torch.nn.Linear(4, 4), norm_with_child)
    add_lora(holder, LoraSettings(target_modules=["0"], train_norms=True), "holder")
    assert norm_with_child.weight.requires_grad and not norm_with_child.inner.weight.requires_grad
    plain = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with caplog.at_level(logging.WARNING):
        add_lora(plain, LoraSettings(train_norms=True), "plain")
    assert "adapter.train_norms=true: backbone 'plain' has no norm layer" in caplog.text
    # biases asked for where there are none (EfficientNet's convolutions): said too
    unbiased = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False))
    with caplog.at_level(logging.WARNING):
        add_lora(unbiased, LoraSettings(bias="lora_only"), "unbiased")
    assert "adapter.bias=lora_only: the adapted layers of backbone 'unbiased' have no biases" in (
        caplog.text
    )


def test_a_decoupled_pull_under_adapters_counts_the_rates_that_train():
    """method=lora with a large lr_backbone was refused for a pull past its target, though the
    backbone's own weights do not train under adapters (unless biases or norms are freed)."""
    model = {"regularizer": "l2_sp", "reg_lambda": 0.1, "reg_decoupled": True, "lr_backbone": 6}
    adapter = {"r": 4, "bias": "none"}
    check_decoupled_pull({**model, "lr_adapter": 1e-3}, adapter)
    with pytest.raises(SFTError, match="the decoupled pull"):
        check_decoupled_pull({**model, "lr_adapter": 1e-3}, {**adapter, "bias": "all"})


def test_a_run_continued_with_its_adapter_layers_named_otherwise_goes_on(train_cfg, tmp_path):
    """A LoRA run continued with `adapter.target_modules` listing the very layers its default
    (null) chose was refused ("was trained with adapter.target_modules=None"); other layers
    still are."""
    short = [*LORA_RUN, "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "test=false"]
    train(train_cfg(*short, run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    longer = [*short[:-3], "trainer.max_epochs=2", "+trainer.limit_train_batches=2", "test=false"]
    listed = "adapter.target_modules=[features.0,features.3,features.6]"
    train(train_cfg(*longer, listed, f"ckpt_path={last}", run_dir=tmp_path / "listed"))
    assert torch.load(tmp_path / "listed" / "checkpoints" / "last.ckpt")["global_step"] == 4
    fewer = "adapter.target_modules=[features.0,features.3]"
    with pytest.raises(SFTError, match=r"adapter\.target_modules=None \(this run: \['features"):
        train(train_cfg(*longer, fewer, f"ckpt_path={last}", run_dir=tmp_path / "fewer"))


@pytest.mark.parametrize("variant", ["use_rslora", "use_dora"])
def test_peft_lora_variants_start_at_the_backbone_and_merge(variant):
    """rsLoRA (alpha / sqrt(r)) and DoRA (a learned magnitude), peft's variants, were "takes no
    such setting": they start at the pretrained backbone's outputs, their trained update merges
    into plain layers with the same outputs, and DoRA's magnitudes train as adapters."""
    torch.manual_seed(0)
    backbone = create_backbone("small_cnn", width=8).eval()
    images = torch.randn(4, 3, 32, 32)
    before = backbone(images)
    settings = LoraSettings(r=4, **{variant: True})
    add_lora(backbone, settings, "small_cnn")
    torch.testing.assert_close(backbone(images), before)
    scaling = {
        layer.scaling["default"] for layer in backbone.modules() if hasattr(layer, "scaling")
    }
    assert scaling == {16 / 2 if variant == "use_rslora" else 16 / 4}
    with torch.no_grad():
        for name, parameter in backbone.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    adapted = backbone(images)
    assert not torch.allclose(adapted, before, atol=1e-3)
    lora = [n for n, p in backbone.named_parameters() if p.requires_grad]
    assert all(is_adapter_parameter(n) for n in lora)
    assert any("magnitude" in n for n in lora) == (variant == "use_dora")
    torch.testing.assert_close(merge_adapters(backbone)(images), adapted, atol=1e-5, rtol=1e-5)
    assert not any(is_adapter_parameter(n) for n, _ in backbone.named_parameters())


class EmbeddingNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.emb(x))


def test_adapters_start_from_a_peft_folder_of_dora_and_embedding_adapters(tmp_path):
    """adapter.init_from: a peft folder's weights, saved under peft's names (DoRA's magnitude
    vector, an Embedding's lora_embedding_A/B), are the adapters' start; one of other settings
    is named."""
    import json

    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    torch.manual_seed(0)
    trained = EmbeddingNet()
    settings = {"r": 2, "alpha": 4.0, "use_dora": True, "target_modules": ["lin", "emb"]}
    add_lora(trained, LoraSettings(**settings), "net")
    with torch.no_grad():
        for name, parameter in trained.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                parameter.normal_()
    state = get_peft_model_state_dict(trained, adapter_name="default")
    assert any("magnitude" in k for k in state) and any("embedding" in k for k in state)
    saved = {f"base_model.model.{k}": v.contiguous() for k, v in state.items()}
    save_file(saved, str(tmp_path / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "use_dora": True}
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({**config, "target_modules": ["lin", "emb"]})
    )
    torch.manual_seed(0)
    started = EmbeddingNet()
    from_folder = {"r": 2, "alpha": 4.0, "use_dora": True, "init_from": str(tmp_path)}
    add_lora(started, LoraSettings(**from_folder), "net")
    tokens = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(started(tokens), trained(tokens))
    with pytest.raises(
        SFTError, match=r"the adapter there has use_dora=True \(this run: use_dora=False\)"
    ):
        add_lora(EmbeddingNet(), LoraSettings(r=2, alpha=4.0, init_from=str(tmp_path)), "net")
    # an adapter of a changed base (PiSSA's residual weights) would start from the wrong place
    pissa = {**config, "target_modules": ["lin", "emb"], "init_lora_weights": "pissa"}
    (tmp_path / "adapter_config.json").write_text(json.dumps(pissa))
    with pytest.raises(SFTError, match=r"init_lora_weights=pissa, which changes the base weights"):
        add_lora(EmbeddingNet(), LoraSettings(**from_folder), "net")


class NestedNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = torch.nn.Sequential()
        self.block.add_module("norm", torch.nn.LayerNorm(4))
        self.block.add_module("lin", torch.nn.Linear(4, 4))
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.block(x)))


def test_a_peft_folder_of_nested_modules_to_save_starts_them(tmp_path):
    """A peft folder whose modules_to_save name modules inside others (`norm` is also
    `block.norm`) was refused, asking for the setting given; one naming a module this
    backbone lacks (BERT's pooler, which sft leaves out) was said as other adapters."""
    import json

    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    torch.manual_seed(0)
    config = LoraConfig(
        r=2, lora_alpha=4, target_modules=["head"], modules_to_save=["block", "norm"]
    )
    peft_model = get_peft_model(NestedNet(), config)
    with torch.no_grad():
        for parameter in peft_model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.5)
    peft_model.save_pretrained(tmp_path)
    settings = {"r": 2, "alpha": 4.0, "init_from": str(tmp_path)}
    started = NestedNet()
    add_lora(started, LoraSettings(**settings, modules_to_save=["block", "norm"]), "net")
    weights = load_file(tmp_path / "adapter_model.safetensors")
    ours = {**started.state_dict(), **get_peft_model_state_dict(started, adapter_name="default")}
    assert len(weights) == 8
    for key, value in weights.items():  # the module's weights, the adapters' by peft's names
        torch.testing.assert_close(ours[key.removeprefix("base_model.model.")], value)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({**saved, "modules_to_save": ["pooler"]})
    )
    with pytest.raises(SFTError, match=r"trains pooler whole \(modules_to_save\), which this"):
        add_lora(NestedNet(), LoraSettings(**settings), "net")


def test_a_run_started_from_a_peft_folder_of_some_layers_loads_and_continues(train_cfg, tmp_path):
    """adapter.init_from with a folder adapting fewer layers than the default: its checkpoints
    were rebuilt (sft-eval, ckpt_path=, resume=) with the default layers, which their weights
    did not fit; the folder's layers are now in the settings the checkpoints keep."""
    import json

    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = tmp_path / "adapter"
    folder.mkdir()
    source = create_backbone("small_cnn", width=8)
    add_lora(source, LoraSettings(r=4, target_modules=["features.0"]), "small_cnn")
    state = get_peft_model_state_dict(source, adapter_name="default")
    save_file(
        {f"base_model.model.{k}": v.contiguous() for k, v in state.items()},
        str(folder / "adapter_model.safetensors"),
    )
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 16, "target_modules": ["features.0"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    short = [*LORA_RUN, f"adapter.init_from={folder}", "trainer.max_epochs=1", "test=false"]
    train(train_cfg(*short, "+trainer.limit_train_batches=2", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    model = load_classifier(last)
    assert [n for n, m in model.backbone.named_modules() if hasattr(m, "lora_A")] == ["features.0"]
    longer = [*short[:-2], "trainer.max_epochs=2", "test=false", "+trainer.limit_train_batches=2"]
    train(train_cfg(*longer, f"ckpt_path={last}", run_dir=tmp_path / "next"))
    assert read_checkpoint(tmp_path / "next" / "checkpoints" / "last.ckpt")["global_step"] == 4
