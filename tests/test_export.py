"""sft-export: TorchScript / ONNX (/ HF folder) exports equal the checkpoint and run without sft."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import EFFNET_ONE_BATCH, compose_config, run_entry_point
from inference_checkpoints import image_checkpoint, text_checkpoint

import sft.export
import sft.jobs.export
from sft.errors import SFTError
from sft.inference.bundle import load_bundle
from sft.jobs.export import check_formats, check_parity, export, float32_rounding
from sft.jobs.train import train
from sft.models import SFTClassifier
from sft.utils.checkpoint_io import read_checkpoint

ATOL, RTOL = 1e-5, 1e-4
# Runs in a fresh interpreter where `import sft` fails: only torch, onnxruntime, transformers.
NO_SFT_PRELUDE = """
import json, sys
sys.modules["sft"] = None  # any import of sft now raises ImportError
import numpy as np, onnxruntime as ort, torch
export_dir, out_file = sys.argv[1], sys.argv[2]
meta = json.load(open(f"{export_dir}/metadata.json"))
"""
IMAGE_SCRIPT = """
images = torch.load(sys.argv[3], weights_only=True)
scripted = torch.jit.load(f"{export_dir}/model.pt")
session = ort.InferenceSession(f"{export_dir}/model.onnx", providers=["CPUExecutionProvider"])
out = {
    "torchscript": scripted(images),
    "onnx": torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0]),
}
torch.save(out, out_file)
"""
TEXT_SCRIPT = """
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer
sentences = json.load(open(sys.argv[3]))
tok = AutoTokenizer.from_pretrained(f"{export_dir}/tokenizer")
enc = tok(sentences, padding=True, truncation=True, return_tensors="pt")
scripted = torch.jit.load(f"{export_dir}/model.pt")
session = ort.InferenceSession(f"{export_dir}/model.onnx", providers=["CPUExecutionProvider"])
# the tokenizer's output as it is, as HF users pass it on (was: token_type_ids too, which
# neither model takes)
onnx_out = session.run(["logits"], {k: v.numpy() for k, v in enc.items()})[0]

hf = f"{export_dir}/hf"
hf_tok = AutoTokenizer.from_pretrained(hf)
enc = hf_tok(sentences, padding=True, truncation=True, return_tensors="pt")
hidden = AutoModel.from_pretrained(hf).eval()(**enc).last_hidden_state
m = enc["attention_mask"].unsqueeze(-1).float()
head = load_file(f"{hf}/classifier_head.safetensors")
assert json.load(open(f"{hf}/sft_head.json"))["pooling"] == "mean"
out = {
    "torchscript": scripted(**enc),
    "onnx": torch.from_numpy(onnx_out),
    "hf": ((hidden * m).sum(1) / m.sum(1)) @ head["weight"].T + head["bias"],
}
torch.save({k: v.detach() for k, v in out.items()}, out_file)
"""


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, data_dir):
    root = tmp_path_factory.getbasetemp() / "inference_ckpts"
    return {
        "image": image_checkpoint(root),
        "text": text_checkpoint(root),
        "image_lora": image_checkpoint(root, lora=True),
        "text_lora": text_checkpoint(root, lora=True),
    }


def run_without_sft(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_SFT_PRELUDE + script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",  # not the checkout: sft must not be importable from the working directory
    )


def run_export(ckpt, out_dir, *overrides):
    cfg = compose_config("export", [f"ckpt_path={ckpt}", *overrides], out_dir)
    return export(cfg)


def test_an_onnx_opset_the_exporter_does_not_write_is_one_line(ckpts, tmp_path):
    """onnx.opset=17 (or 30) under the dynamo exporter wrote an opset-18 file, printed
    onnxscript's traceback and ended with exit status 0."""
    with pytest.raises(SFTError, match=r"^onnx\.opset=17: torch's dynamo exporter .* writes opset"):
        run_export(ckpts["image"], tmp_path / "a", "formats=[onnx]", "onnx.opset=17")
    with pytest.raises(SFTError, match=r"^onnx\.opset=30: the exporter wrote opset 18 instead"):
        run_export(ckpts["image"], tmp_path / "b", "formats=[onnx]", "onnx.opset=30")
    assert not any((tmp_path / "b" / "export").iterdir())  # nothing written is left


@pytest.mark.parametrize("kind", ["image", "image_lora"])
def test_image_export_equals_the_checkpoint_without_sft(kind, ckpts, tmp_path, capsys):
    """With LoRA the exported model is plain: the adapters merged into the weights."""
    # the default formats, with torch's default (dynamo) ONNX exporter
    out = run_export(ckpts[kind], tmp_path / "run")
    assert out == tmp_path / "run" / "export"
    printed = capsys.readouterr().out
    assert "torchscript: max abs diff" in printed and "onnx: max abs diff" in printed
    assert "[torch.onnx]" not in printed  # the dynamo exporter's stages (were printed)
    # the export given where a checkpoint belongs: said so (was: "corrupt or not a checkpoint",
    # after torch's warning about TorchScript archives)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SFTError, match=r"model\.pt: a TorchScript model \(e\.g\. sft-export"):
            read_checkpoint(out / "model.pt")
        with pytest.raises(SFTError, match=r"model\.onnx: an ONNX model \(e\.g\. sft-export"):
            read_checkpoint(out / "model.onnx")
    meta = json.loads((out / "metadata.json").read_text())
    bundle = load_bundle(ckpts[kind])
    assert meta["class_names"] == bundle.class_names and meta["image_size"] == 32
    assert meta["files"] == {"torchscript": "model.pt", "onnx": "model.onnx"}
    assert bundle.model.head.branch is not None  # a fused head: folding is exercised

    # real test images the exporter did not see (it checks the first 8), other batch size
    bundle.datamodule.setup("test")
    images = torch.stack([bundle.datamodule.test_data[i][0] for i in range(20, 25)])
    expected = bundle.logits(bundle.image_inputs(images))
    torch.save(images.float() / 255, tmp_path / "images.pt")
    result = run_without_sft(IMAGE_SCRIPT, out, tmp_path / "out.pt", tmp_path / "images.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    for name, logits in got.items():
        assert logits.shape == expected.shape, name
        assert (logits - expected).abs().max() <= ATOL, name


@pytest.mark.parametrize("kind", ["text", "text_lora"])
def test_text_export_equals_the_checkpoint_without_sft(
    kind, ckpts, data_dir, tmp_path, capfd, recwarn
):
    """With LoRA the exported HF folder holds a plain transformers model (adapters merged)."""
    capfd.readouterr()
    out = run_export(
        ckpts[kind],
        tmp_path / "run",
        "formats=[torchscript,onnx,hf]",
        "onnx.dynamo=false",  # the TorchScript-based exporter: seconds instead of ~30 s on CPU
        f"output_dir={tmp_path / 'deploy'}",
    )
    assert out == tmp_path / "deploy"
    # the parity lines, not transformers' report of the unused pooler as newly initialised
    # on every reload, its progress bars, or torch.jit's deprecation warnings (were printed)
    printed = capfd.readouterr()
    assert "hf: max abs diff" in printed.out
    for noise in ("LOAD REPORT", "Loading weights", "loss_type"):
        assert noise not in printed.out + printed.err, noise
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
    meta = json.loads((out / "metadata.json").read_text())
    assert set(meta["parity_max_abs_diff"]) == {"folded", "torchscript", "onnx", "hf"}
    # onnxruntime's float32 kernels round differently from torch's: 1.1e-5 on one checkpoint
    assert max(meta["parity_max_abs_diff"].values()) <= 2 * ATOL
    # the class names are sft's (AutoModelForSequenceClassification would add a random
    # classifier and show its scores under them: was config.json's id2label)
    assert (
        json.loads((out / "hf" / "sft_head.json").read_text())["class_names"]
        == (meta["class_names"])
    )
    assert meta["class_names"] == ["negative", "positive"]
    assert "negative" not in (out / "hf" / "config.json").read_text()

    # dev sentences of other lengths than the exporter's parity batch, and one longer than the
    # model's max_length: the exported tokenizers cut it there themselves (the script calls
    # them with truncation=True alone, as a user would; was: at the backbone's 512 tokens)
    lines = (data_dir / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[30:36]
    sentences = [line.split("\t")[0] for line in lines]
    sentences.append(" ".join(sentences * 8))
    bundle = load_bundle(ckpts[kind])
    expected = bundle.logits(bundle.collate(bundle.tokenize(sentences)))
    (tmp_path / "sentences.json").write_text(json.dumps(sentences))
    result = run_without_sft(TEXT_SCRIPT, out, tmp_path / "out.pt", tmp_path / "sentences.json")
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    assert set(got) == {"torchscript", "onnx", "hf"}
    for name, logits in got.items():
        assert (logits - expected).abs().max() <= ATOL, name
    # tokenizer.json read alone (the `tokenizers` library, an ONNX service) cuts at the trained
    # max_length and pads a batch to its longest text (was: the packaged tokenizer's 128, with
    # every text padded to 128)
    from tokenizers import Tokenizer

    max_length = bundle.datamodule.max_length
    short = len(bundle.datamodule.tokenizer("good")["input_ids"])
    for folder in ("tokenizer", "hf"):
        raw = Tokenizer.from_file(str(out / folder / "tokenizer.json"))
        assert [len(raw.encode(s).ids) for s in (sentences[-1], "good")] == [max_length, short]
        assert [len(e.ids) for e in raw.encode_batch(["good", sentences[0]])] == [
            len(raw.encode(sentences[0]).ids)
        ] * 2


def test_an_export_of_a_checkpoint_whose_data_moved_reads_it_where_it_is_now(
    ckpts, data_dir, tmp_path
):
    """The parity check reads the checkpoint's data; moved, `+data.data_dir=<where it is now>`
    points it there (was: accepted and ignored, so the export failed on the old path)."""
    checkpoint = torch.load(ckpts["image"], weights_only=True)
    hparams = checkpoint["datamodule_hyper_parameters"]
    hparams.update(data_dir=str(tmp_path / "moved_away"), download=False)  # not fetched again
    moved = tmp_path / "moved.ckpt"
    torch.save(checkpoint, moved)
    with pytest.raises(SFTError, match="moved_away"):
        run_export(moved, tmp_path / "run", "formats=[torchscript]")
    out = run_export(moved, tmp_path / "run", "formats=[torchscript]", f"+data.data_dir={data_dir}")
    assert (out / "model.pt").is_file()


def test_an_export_of_a_model_whose_hf_dataset_moved_names_the_dataset_setting(
    ckpts, data_dir, tmp_path
):
    """A Hugging Face dataset that moved: the hint named +data.data_dir, which source=hf does
    not read; +data.dataset_name=<where it is now> is what reads it."""
    import datasets

    lines = (data_dir / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:41]
    rows = [line.split("\t") for line in lines]
    split = datasets.Dataset.from_dict(
        {"sentence": [r[0] for r in rows], "label": [int(r[1]) for r in rows]}
    )
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(tmp_path / "ds")
    checkpoint = torch.load(ckpts["text"], weights_only=True)
    hparams = checkpoint["datamodule_hyper_parameters"]
    hparams.update(
        source="hf",
        dataset_name=str(tmp_path / "moved_away"),
        train_split="train",
        val_split="validation",
        test_split=None,
    )
    moved = tmp_path / "moved.ckpt"
    torch.save(checkpoint, moved)
    with pytest.raises(SFTError, match=r"moved_away.* \+data\.dataset_name=\.\.\. reads it"):
        run_export(moved, tmp_path / "run", "formats=[torchscript]")
    found = f"+data.dataset_name={tmp_path / 'ds'}"
    out = run_export(moved, tmp_path / "run", "formats=[torchscript]", found)
    assert (out / "model.pt").is_file()


@pytest.mark.parametrize(
    "entry, added, refusal",
    [
        ("export", "+foo=3", "unknown config key 'foo': sft-export reads no such setting"),
        ("predict", "+model.num_classes=5", "model.num_classes: sft-predict takes the model from"),
        ("eval", "+model.num_classes=5", "model.num_classes: sft-eval takes the model from"),
        ("predict", "+data=cifar10", "data=...: sft-predict reads the checkpoint's data;"),
        ("export", "trainer.accelerator=cpu", "trainer.accelerator: sft-export has no trainer"),
    ],
)
def test_a_setting_the_command_would_ignore_is_refused(entry, added, refusal, tmp_path, capsys):
    """sft-export, sft-predict and sft-eval take the model (and sft-export and sft-predict the
    data, but for `+data.<key>`) from the checkpoint: a `+key=` they would not read was accepted
    and ignored without a word."""
    import sft.eval
    import sft.predict

    main = {"export": sft.export.main, "predict": sft.predict.main, "eval": sft.eval.main}
    argv = [f"sft-{entry}", "ckpt_path=x.ckpt", "inputs=x.txt", added, f"paths.log_dir={tmp_path}"]
    if entry != "predict":
        argv.remove("inputs=x.txt")
    assert run_entry_point(main[entry], argv) == 1
    assert capsys.readouterr().err.strip().startswith(f"error: {refusal}")


def test_format_choice_errors():
    assert check_formats(None, "text") == ["torchscript", "onnx", "hf"]
    assert check_formats(None, "image") == ["torchscript", "onnx"]
    # a name given twice is one format (was: written and checked twice, "exported hf, hf")
    assert check_formats(["hf", "onnx", "hf"], "text") == ["hf", "onnx"]
    with pytest.raises(SFTError, match="text backbones only"):
        check_formats(["hf"], "image")
    with pytest.raises(SFTError, match="expected a non-empty list of"):
        check_formats(["tflite"], "image")
    with pytest.raises(SFTError, match=r"non-empty list of .*, got \[\] \(null: every format"):
        check_formats([], "image")
    # a text head with an MLP branch (model.head.branch=mlp) has no hf folder: the default
    # leaves it out, and asking for it is refused before anything is exported (was: the
    # default failed after building and checking TorchScript and ONNX, keeping none)
    assert check_formats(None, "text", head_folds=False) == ["torchscript", "onnx"]
    with pytest.raises(SFTError, match=r"^formats: hf needs a head that folds into one Linear"):
        check_formats(["onnx", "hf"], "text", head_folds=False)
    # a text backbone of the user's own has no save_pretrained folder either (was: the default
    # failed after TorchScript and ONNX passed, writing nothing)
    assert check_formats(None, "text", hf_backbone=False) == ["torchscript", "onnx"]
    with pytest.raises(SFTError, match=r"^formats: hf needs a Hugging Face backbone .*: export"):
        check_formats(["hf"], "text", hf_backbone=False)


def test_parity_failure_is_one_clear_line():
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3).eval()
    args = (torch.rand(5, 4),)
    checks = [(args, module(*args).detach())]

    def floor():
        return float32_rounding(module, [args[0]], [checks[0][1]])

    assert check_parity("exact", lambda a: module(*a), checks, ATOL, RTOL, floor) == 0.0
    with pytest.raises(SFTError, match=r"by 0\.001 > atol=1e-05 \+ rtol=0\.0001 .* not faithful$"):
        check_parity("off", lambda a: module(*a) + 1e-3, checks, ATOL, RTOL, floor)


def test_parity_tolerance_grows_with_the_logits_scale():
    """The defaults accept float32 rounding of large logits (EfficientNet-Lite0's ~30: ONNX
    4e-5 off, refused by atol=1e-5 alone) and still refuse an offset of small ones."""
    defaults = compose_config("export", ["ckpt_path=unused"], Path("unused"))
    atol, rtol = defaults.atol, defaults.rtol
    module = torch.nn.Linear(4, 3).eval()
    args = (torch.rand(5, 4),)
    with torch.no_grad():
        module.weight.fill_(10.0)  # logits up to 40
        large = [(args, module(*args))]
        floor = lambda: float32_rounding(module, [args[0]], [large[0][1]])  # noqa: E731
        assert check_parity("rounded", lambda a: module(*a) + 4e-5, large, atol, rtol, floor)
        module.weight.fill_(0.1)  # logits below 1
        small = [(args, module(*args))]
        floor = lambda: float32_rounding(module, [args[0]], [small[0][1]])  # noqa: E731
        with pytest.raises(SFTError, match="not faithful"):
            check_parity("off", lambda a: module(*a) + 2e-4, small, atol, rtol, floor)


class TemperedClassifier(SFTClassifier):
    """A user's model whose forward scales the logits: the exported module (backbone, then
    head) leaves that out."""

    def __init__(self, temperature: float = 10.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.temperature = temperature

    def forward(self, inputs):
        return super().forward(inputs) * self.temperature


def test_an_export_leaving_out_a_models_own_forward_is_not_called_rounding(ckpts, tmp_path):
    """A model class overriding forward: the export differs, and the message named it float32
    rounding with an atol to accept it (the float64 check ran the exported module, which
    leaves the forward out too), so following it shipped a model with other outputs."""
    checkpoint = torch.load(ckpts["image"], map_location="cpu", weights_only=True)
    checkpoint["model_target"] = f"{__name__}.TemperedClassifier"
    tempered = tmp_path / "tempered.ckpt"
    torch.save(checkpoint, tempered)
    with pytest.raises(
        SFTError,
        match=r"^folded model export differs from the checkpoint by .*; the export is not "
        r"faithful \(TemperedClassifier overrides SFTClassifier\.forward, and the exported "
        r"module runs the backbone, then the head; sft-predict runs the checkpoint with its "
        r"forward\)$",
    ):
        run_export(tempered, tmp_path / "run", "formats=[torchscript]")
    assert not (tmp_path / "run" / "export" / "model.pt").exists()


def test_an_unknown_format_is_refused_before_the_checkpoint_is_read(tmp_path):
    """`formats=[onxx]` was refused only after the checkpoint had loaded (~10 s); here the
    checkpoint does not even exist, and the format is what the line names."""
    with pytest.raises(SFTError, match=r"^formats: expected a non-empty list of .*\['onxx'\]"):
        run_export(tmp_path / "none.ckpt", tmp_path / "run", "formats=[onxx]")


def test_one_format_as_a_string_and_no_export_written_over(ckpts, tmp_path):
    """`formats=torchscript` is that format (was: "expected a list ..., got ['t', 'o', ...]");
    a second export into the same output_dir is refused and the first is kept (was: written
    over)."""
    out = run_export(ckpts["image"], tmp_path / "run", "formats=torchscript")
    meta = (out / "metadata.json").read_text()
    assert json.loads(meta)["files"] == {"torchscript": "model.pt"}
    with pytest.raises(SFTError, match=r"metadata\.json already exists: give another output_dir"):
        run_export(ckpts["image"], tmp_path / "run", "formats=torchscript")
    assert (out / "metadata.json").read_text() == meta


def test_files_in_output_dir_are_never_replaced(ckpts, tmp_path):
    """A user's model.pt in output_dir (was: silently written over: only metadata.json was
    checked); output_dir naming a file (was: FileExistsError traceback)."""
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "model.pt").write_text("mine")
    with pytest.raises(SFTError, match=r"model\.pt already exists: give another output_dir"):
        run_export(ckpts["image"], tmp_path / "run", "formats=[torchscript]", f"output_dir={out}")
    assert (out / "model.pt").read_text() == "mine"
    a_file = tmp_path / "notes.csv"
    a_file.write_text("x")
    with pytest.raises(
        SFTError, match=r"^\S*notes\.csv is a file, not a folder: .* give another output_dir$"
    ):
        run_export(ckpts["image"], tmp_path / "run", f"output_dir={a_file}")


def test_a_failed_export_leaves_none_of_its_files(ckpts, tmp_path, monkeypatch):
    """The ONNX parity check fails after model.pt and model.onnx are written (was: both left
    behind, without metadata.json); a negative atol is a config error (was: accepted)."""
    real_check = sft.jobs.export.check_parity

    def onnx_fails(name, *args):
        if name == "onnx":
            raise SFTError("onnx export differs from the checkpoint")
        return real_check(name, *args)

    monkeypatch.setattr(sft.jobs.export, "check_parity", onnx_fails)
    out = tmp_path / "deploy"
    with pytest.raises(SFTError, match="onnx export differs"):
        run_export(
            ckpts["image"],
            tmp_path / "run",
            "formats=[torchscript,onnx]",
            "onnx.dynamo=false",
            f"output_dir={out}",
        )
    assert list(out.iterdir()) == []
    with pytest.raises(SFTError, match=r"^atol: expected a float >= 0, got -1"):
        run_export(ckpts["image"], tmp_path / "run", "atol=-1")
    with pytest.raises(SFTError, match=r"^rtol: expected a float >= 0, got -1"):
        run_export(ckpts["image"], tmp_path / "run", "rtol=-1")


@pytest.mark.slow
def test_efficientnet_lite0_exports_with_the_default_tolerance(tmp_path, data_dir):
    """The README's CPU image recipe (timm's Conv2dSame padding): the TorchScript trace failed
    with "RuntimeError: unordered_map::at" on every EfficientNet-Lite0 checkpoint; the ONNX
    export, float32 rounding of onnxruntime's kernels, was refused by the default tolerance
    (4.4e-5 > atol=1e-5 on logits up to 31)."""
    run = tmp_path / "train"
    train(compose_config("train", EFFNET_ONE_BATCH, run))
    out = run_export(
        run / "checkpoints" / "last.ckpt",
        tmp_path / "export",
        "formats=[torchscript,onnx]",
        "onnx.dynamo=false",  # the TorchScript-based exporter: seconds instead of ~30 s on CPU
    )
    assert (out / "model.pt").is_file() and (out / "model.onnx").is_file()
    assert set(json.loads((out / "metadata.json").read_text())["parity_max_abs_diff"]) == {
        "folded",
        "torchscript",
        "onnx",
    }


def test_metadata_names_the_tokenizer_folder_the_export_wrote(tmp_path):
    """formats=[hf] writes its tokenizer inside hf/ (was: metadata.json named a tokenizer/
    folder that export does not write)."""
    from types import SimpleNamespace

    from sft.jobs.export import metadata

    bundle = SimpleNamespace(
        ckpt_path=tmp_path / "last.ckpt",
        modality="text",
        class_names=["negative", "positive"],
        datamodule=SimpleNamespace(max_length=64),
    )
    hf_only = metadata(bundle, {"hf": "hf/"}, {})
    assert hf_only["tokenizer"] == "hf/ (AutoTokenizer.from_pretrained)"
    both = metadata(bundle, {"tokenizer": "tokenizer/", "hf": "hf/"}, {})
    assert both["tokenizer"] == "tokenizer/ (AutoTokenizer.from_pretrained)"


def train_on_backbone_folder(folder: Path, run: Path, *overrides: str) -> Path:
    """Two steps of `sst2_minilm` on the Hugging Face model folder `folder`; its last.ckpt."""
    settings = [
        "experiment=sst2_minilm",
        "+trainer.max_steps=2",
        "test=false",
        "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "+trainer.limit_val_batches=1",
        f"model.backbone.model_name_or_path={folder}",
        "data.samples_per_class=8",
        "data.batch_size=8",
        *overrides,
    ]
    train(compose_config("train", settings, run))
    return run / "checkpoints" / "last.ckpt"


def test_an_encoder_saved_without_its_decoder_exports_as_that_class(tmp_path, data_dir):
    """A T5EncoderModel backbone: formats=[hf] reloaded its folder with AutoModel, which builds
    the whole T5 with a random decoder (its parity run failed: "You must specify exactly one of
    input_ids or inputs_embeds"), and sft_head.json told users to load it so."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from sft.hub import resolve_model_name

    folder = tmp_path / "t5_encoder"
    config = T5Config(vocab_size=30522, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2)
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model_name("minilm")).save_pretrained(folder)
    last = train_on_backbone_folder(folder, tmp_path / "train")
    out = run_export(last, tmp_path / "run", "formats=[hf]")
    head = json.loads((out / "hf" / "sft_head.json").read_text())
    assert head["logits"].startswith("pool(T5EncoderModel(input_ids, attention_mask)")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["parity_max_abs_diff"]["hf"] < ATOL


def test_a_model_of_its_own_code_exports_to_hf_with_trust_remote_code(
    tmp_path, data_dir, monkeypatch
):
    """A backbone folder whose config maps to its own code (auto_map, its own model_type),
    trained with trust_remote_code: `sft-export trust_remote_code=true formats=[hf]` wrote the
    folder and then failed reloading it ("contains custom code which must be executed")."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from sft.hub import resolve_model_name

    # where transformers copies the code it runs: the test's, not the user's cache
    monkeypatch.setattr("transformers.dynamic_module_utils.HF_MODULES_CACHE", str(tmp_path / "m"))
    folder = tmp_path / "own_code"
    torch.manual_seed(0)
    BertModel(
        BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model_name("minilm")).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="sft-own-code",
        auto_map={"AutoConfig": "configuration_own.OwnConfig", "AutoModel": "modeling_own.Own"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_own.py").write_text(
        "from transformers import BertConfig\n\n\nclass OwnConfig(BertConfig):\n"
        "    model_type = 'sft-own-code'\n"
    )
    (folder / "modeling_own.py").write_text(
        "from transformers import BertModel\n\nfrom .configuration_own import OwnConfig\n\n\n"
        "class Own(BertModel):\n    config_class = OwnConfig\n"
    )
    last = train_on_backbone_folder(
        folder, tmp_path / "train", "model.backbone.trust_remote_code=true"
    )
    out = run_export(last, tmp_path / "run", "formats=[hf]", "trust_remote_code=true")
    assert (out / "hf" / "modeling_own.py").is_file()  # the code it needs goes with it
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["parity_max_abs_diff"]["hf"] < ATOL


def test_a_lora_run_exports_a_peft_adapter_folder_for_its_base(ckpts, tmp_path, data_dir):
    """formats=[peft]: a LoRA run of a published text model (here a saved BERT folder) as
    peft's adapter folder for that base, which `PeftModel.from_pretrained` loads onto the base
    with the checkpoint's outputs (was: only whole merged models; a peft user had to rename
    the state dict and write the config by hand). A model an adapter file alone would not
    reproduce is refused before anything is written."""
    from peft import PeftConfig
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    from sft.hub import resolve_model_name

    folder = tmp_path / "bert"
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model_name("minilm")).save_pretrained(folder)
    lora_run = ["adapter=lora", "adapter.r=4", "model.lr_adapter=0.05", "model.linear_probe=null"]
    last = train_on_backbone_folder(folder, tmp_path / "train", *lora_run)
    out = run_export(last, tmp_path / "run", "formats=[peft]")
    saved = PeftConfig.from_pretrained(out / "peft")
    assert saved.base_model_name_or_path == str(folder) and saved.r == 4
    assert len(saved.target_modules) == 2 * 6  # q, k, v, attention output, FFN in and out
    weights = load_file(out / "peft" / "adapter_model.safetensors")
    trained = [v for k, v in weights.items() if ".lora_B." in k]
    assert len(weights) == 2 * len(trained) == 24 and any(bool(v.abs().sum()) for v in trained)
    assert all(k.startswith("base_model.model.encoder.layer.") for k in weights)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["parity_max_abs_diff"]["peft"] < ATOL and meta["tokenizer"].startswith("peft/")
    # and back: a run's adapters started from that folder (adapter.init_from) are the trained
    # ones (was: no way to start from a peft adapter)
    backbone = {
        "_target_": "sft.models.backbones.create_backbone",
        "name": "huggingface",
        "model_name_or_path": str(folder),
        "pretrained": True,
    }
    adapter = {"_target_": "sft.models.adapters.LoraSettings", "r": 4}
    started = SFTClassifier(
        backbone=backbone, num_classes=2, adapter={**adapter, "init_from": str(out / "peft")}
    )
    trained = read_checkpoint(last)["state_dict"]
    lora = {k: v for k, v in started.state_dict().items() if ".lora_" in k}
    assert len(lora) == 24
    for key, value in lora.items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0, msg=key)
    with pytest.raises(
        SFTError, match=r"the adapter there has r=4 \(this run: r=8\): set adapter\.r=4"
    ):
        SFTClassifier(
            backbone=backbone,
            num_classes=2,
            adapter={**adapter, "r": 8, "init_from": str(out / "peft")},
        )
    # modules trained whole (adapter.modules_to_save) go into the folder as peft's own (the
    # export's parity check loads it back), and a run started from it reads them
    saving = [
        *lora_run,
        "adapter.modules_to_save=[encoder.layer.1.output]",
        "model.lr_backbone=0.05",
    ]
    last = train_on_backbone_folder(folder, tmp_path / "train_saved", *saving)
    out = run_export(last, tmp_path / "run_saved", "formats=[peft]")
    assert PeftConfig.from_pretrained(out / "peft").modules_to_save == ["encoder.layer.1.output"]
    weights = load_file(out / "peft" / "adapter_model.safetensors")
    dense = "encoder.layer.1.output.dense.weight"
    assert not torch.equal(
        weights[f"base_model.model.{dense}"], BertModel.from_pretrained(folder).state_dict()[dense]
    )  # trained
    assert json.loads((out / "metadata.json").read_text())["parity_max_abs_diff"]["peft"] < ATOL
    folder_start = {**adapter, "init_from": str(out / "peft")}
    with pytest.raises(SFTError, match=r"set adapter\.modules_to_save=\[encoder\.layer\.1\.out"):
        SFTClassifier(backbone=backbone, num_classes=2, adapter=folder_start)
    started = SFTClassifier(
        backbone=backbone,
        num_classes=2,
        adapter={**folder_start, "modules_to_save": ["encoder.layer.1.output"]},
    )
    trained = read_checkpoint(last)["state_dict"]
    for key, value in started.state_dict().items():
        if ".lora_" in key or ".layer.1.output." in key:
            torch.testing.assert_close(value, trained[key], rtol=0, atol=0, msg=key)
    with pytest.raises(SFTError, match=r"^formats=\[peft\]: a LoRA adapter file would not repro"):
        run_export(ckpts["text_lora"], tmp_path / "refused", "formats=[peft]")
    assert not (tmp_path / "refused" / "export").exists()
    with pytest.raises(SFTError, match=r"^formats=\[peft\]: this model has no adapters"):
        run_export(ckpts["text"], tmp_path / "plain", "formats=[peft]")
    with pytest.raises(SFTError, match=r"^formats: peft .* is for text backbones only"):
        check_formats(["peft"], "image")
