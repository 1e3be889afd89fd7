"""The Hugging Face text backbone and layer-wise LR decay: offline, CPU, tiny BERTs built from
the packaged MiniLM config, plus the packaged MiniLM weights themselves."""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config, logs_warning
from helpers.tiny_models import TINY_BERT, TINY_BERT_OVERRIDES
from hydra.utils import instantiate
from transformers import AutoModel, AutoTokenizer, BertTokenizerFast, DistilBertConfig

from sft.contracts import InputSpec
from sft.data.text import TextClassificationDataModule
from sft.errors import SFTError
from sft.hub import resolve_model_name
from sft.models import SFTClassifier, load_classifier
from sft.models.backbones import (
    HFEncoder,
    create_backbone,
    list_backbones,
    resolve_input_spec,
)
from sft.models.backbones import huggingface as hf_backbone
from sft.models.classifier import split_batch

TINY = TINY_BERT_OVERRIDES
TINY_BACKBONE = TINY_BERT
SENTENCES = [
    "a gripping, beautifully acted film",
    "dull and far too long",
    "one of the best movies of the year",
    "i wanted my two hours back",
    "warm, funny and smart",
    "a tedious mess",
    "the cast is wonderful",
    "painfully boring from start to finish",
]
LABELS = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0])


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_name("minilm"))


@pytest.fixture(scope="module")
def minilm() -> HFEncoder:
    return create_backbone("huggingface", pretrained=True).eval()


def tiny(**options) -> HFEncoder:
    torch.manual_seed(0)
    overrides = {**TINY, **options.pop("config_overrides", {})}
    return create_backbone("huggingface", config_overrides=overrides, **options)


def single_line(err: pytest.ExceptionInfo[SFTError]) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


# --- features ---------------------------------------------------------------------------------


def test_registered_as_a_text_backbone() -> None:
    assert "huggingface" in list_backbones("text")
    assert "huggingface" not in list_backbones("image")
    assert "huggingface" in list_backbones()


def test_tiny_bert_maps_tokens_to_features(tokenizer) -> None:
    model = tiny().eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    assert model.num_features == 32 and model.num_layers == 2
    assert out.shape == (len(SENTENCES), 32)
    assert torch.isfinite(out).all()


def test_mean_pooling_ignores_padding(tokenizer) -> None:
    model = tiny(pooling="mean").eval()
    short = tokenizer(SENTENCES[:1], return_tensors="pt")
    padded = tokenizer(SENTENCES[:1], padding="max_length", max_length=32, return_tensors="pt")
    assert padded["attention_mask"].sum() < padded["attention_mask"].numel()
    with torch.no_grad():
        torch.testing.assert_close(model(**short), model(**padded), atol=1e-5, rtol=1e-5)


def test_cls_pooling_returns_the_first_token(tokenizer) -> None:
    model = tiny(pooling="cls").eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.model(**batch).last_hidden_state[:, 0]
        torch.testing.assert_close(model(**batch), expected)


def test_unknown_pooling_is_a_clear_error() -> None:
    with pytest.raises(SFTError, match="pooling"):
        tiny(pooling="max")


def test_packaged_minilm_embeds_meaning(minilm, tokenizer) -> None:
    # Measured: cosine 0.84 for the guitar paraphrases, about -0.05 to the unrelated sentence;
    # random weights give all pairs a similar, high cosine.
    pairs = [
        (
            "A man is playing a guitar.",
            "Someone plays the guitar.",
            "Stock markets fell sharply today.",
        ),
        ("The film was wonderful.", "I loved this movie.", "Add two cups of flour to the bowl."),
    ]
    for anchor, paraphrase, unrelated in pairs:
        batch = tokenizer([anchor, paraphrase, unrelated], padding=True, return_tensors="pt")
        with torch.no_grad():
            a, p, u = F.normalize(minilm(**batch), dim=-1)
        close, far = (a @ p).item(), (a @ u).item()
        assert close > 0.5 and close > far + 0.4, (anchor, close, far)


def test_distilbert_style_model_without_token_types(tokenizer) -> None:
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=3, n_heads=2, hidden_dim=64)
    model = HFEncoder(AutoModel.from_config(config)).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")  # includes token_type_ids
    with torch.no_grad():
        assert model(**batch).shape == (len(SENTENCES), 32)
    assert model.num_layers == 3
    ids = {model.layer_id(n) for n, _ in model.named_parameters()}
    assert ids == {0, 1, 2, 3}


def test_a_one_segment_model_reads_sentence_pairs(tokenizer) -> None:
    """A BERT-architecture model with type_vocab_size=1 (one segment type) given a BERT
    tokenizer's pair: its second text's type 1 indexed past the table (was: IndexError)."""
    model = tiny(config_overrides={"type_vocab_size": 1}).eval()
    batch = tokenizer(SENTENCES[:2], SENTENCES[2:4], padding=True, return_tensors="pt")
    assert batch["token_type_ids"].max() == 1
    with torch.no_grad():
        paired = model(**batch)
        batch.pop("token_type_ids")
        assert torch.equal(paired, model(**batch))  # its one type, 0, for every token


def test_an_encoder_saved_without_its_decoder_loads_as_the_encoder(tmp_path, caplog) -> None:
    """`T5EncoderModel.save_pretrained` (sentence-T5 style): AutoModel built the whole T5 with a
    random decoder (was: a missing-weights warning, then "You must specify exactly one of
    input_ids or inputs_embeds" in the first forward)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=30522, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2)
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        backbone = create_backbone("huggingface", model_name_or_path=str(tmp_path), pretrained=True)
    assert isinstance(backbone.model, T5EncoderModel)
    assert not [r for r in caplog.records if "start random" in r.getMessage()]
    ids = torch.tensor([[5, 6, 7, 1], [8, 9, 1, 0]])
    features = backbone(input_ids=ids, attention_mask=(ids > 0).long())
    assert features.shape == (2, 32) and torch.isfinite(features).all()
    rebuilt = create_backbone("huggingface", model_name_or_path=str(tmp_path))  # from a ckpt
    assert isinstance(rebuilt.model, T5EncoderModel)


# --- loading and options ------------------------------------------------------------------------


def test_bogus_hub_id_offline_is_one_quick_line() -> None:
    start = time.monotonic()
    with pytest.raises(SFTError) as err:
        create_backbone(
            "huggingface", model_name_or_path="sft-tests/no-such-model", pretrained=True
        )
    assert time.monotonic() - start < 10, "must not sit through the hub's retries"
    assert "sft-tests/no-such-model" in single_line(err)


def test_missing_local_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "mine"
    with pytest.raises(SFTError) as err:
        create_backbone("huggingface", model_name_or_path=str(folder))
    assert str(folder) in single_line(err)


CUSTOM_CODE = {"AutoConfig": "configuration_x.XConfig", "AutoModel": "modeling_x.XModel"}


@pytest.mark.parametrize(
    "files, reason",
    [
        # was: transformers' ValueError ("Unrecognized model in ...", with every model type it
        # knows) through Hydra's instantiation error
        (
            {"train.tsv": "sentence\tlabel\ngood\t1\n"},
            "the folder has no config.json, so it is not a Hugging Face model folder "
            "(save_pretrained writes one); give such a folder or a hub id",
        ),
        # a peft adapter folder (was: "the folder has no config.json")
        (
            {"adapter_config.json": json.dumps({"peft_type": "LORA"})},
            "it is a peft adapter folder (adapter_config.json), LoRA weights without the model "
            "they adapt: merge it into its base model with peft (PeftModel.from_pretrained("
            "AutoModel.from_pretrained(<base>), <this folder>).merge_and_unload()"
            ".save_pretrained(<folder>)) and give that folder",
        ),
        # a config that maps to code the folder ships: transformers' ValueError says "pass the
        # argument trust_remote_code=True"; the line names sft's key
        (
            {"config.json": json.dumps({"model_type": "sft-custom", "auto_map": CUSTOM_CODE})},
            "it ships its own code, which runs only with model.backbone.trust_remote_code=true "
            "(set it only for a source you trust)",
        ),
    ],
    ids=["not-a-model", "peft-adapter", "own-code"],
)
def test_a_folder_that_does_not_load_as_a_model_is_one_line(
    tmp_path: Path, files: dict[str, str], reason: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(SFTError) as err:
        create_backbone("huggingface", model_name_or_path=str(tmp_path), pretrained=True)
    assert single_line(err) == f"could not load model from {tmp_path}: {reason}"


def test_a_model_folder_of_a_config_alone_says_how_to_build_it_untrained(tmp_path: Path) -> None:
    """A config.json without weights (a size written to try): transformers' "no file named
    model.safetensors ..." without a word of model.backbone.pretrained=false."""
    from transformers import BertConfig

    BertConfig(**TINY).save_pretrained(tmp_path)
    with pytest.raises(SFTError) as err:
        create_backbone("huggingface", model_name_or_path=str(tmp_path), pretrained=True)
    assert single_line(err).endswith(
        "the folder holds a config but no weights: model.backbone.pretrained=false builds the "
        "model from the config, randomly initialised"
    )
    create_backbone("huggingface", model_name_or_path=str(tmp_path), pretrained=False)


class NotATensor:
    """An object a weights file should not hold (weights_only loading refuses it)."""


@pytest.mark.parametrize("damage", ["pickled_object", "truncated_safetensors"])
def test_a_weights_file_that_does_not_read_is_one_line(tmp_path: Path, damage: str) -> None:
    """A pytorch_model.bin holding more than tensors (refused by weights_only loading, whose
    advice is to switch that off) or a truncated model.safetensors: Hydra's lines around
    transformers' error."""
    tiny().model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    if damage == "pickled_object":
        weights.unlink()
        torch.save(
            {"embeddings.word_embeddings.weight": NotATensor()}, tmp_path / "pytorch_model.bin"
        )
        expected = "its weights file (pytorch_model.bin) holds pickled objects other than tensors"
    else:
        weights.write_bytes(weights.read_bytes()[:100])
        expected = "its safetensors weights do not read ("
    with pytest.raises(SFTError) as err:
        create_backbone("huggingface", model_name_or_path=str(tmp_path), pretrained=True)
    assert single_line(err).startswith(f"could not load model from {tmp_path}: {expected}")


def test_a_folder_whose_own_code_is_not_run_says_so(tmp_path: Path, caplog) -> None:
    """A config.json of a built-in model_type that maps AutoModel to the folder's own code
    (Jina v2's style): transformers built its own BERT without a word."""
    import json

    tiny().model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_own.OwnModel"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with logs_warning(caplog, r"its config\.json names code of its own \(auto_map\), which runs"):
        create_backbone("huggingface", model_name_or_path=str(tmp_path))


def test_a_model_folder_without_tokenizer_files_is_refused(tmp_path: Path) -> None:
    """A model saved with `AutoModel.save_pretrained` alone (config and weights): transformers
    builds an empty tokenizer from it, and every word became [UNK] without a sign (was: a run
    that completed at chance accuracy)."""
    from sft.data.token_cache import load_tokenizer

    tiny().model.save_pretrained(tmp_path)
    with pytest.raises(SFTError) as err:
        load_tokenizer(str(tmp_path))
    message = single_line(err)
    assert message.startswith(f"tokenizer '{tmp_path}' has no vocabulary beyond its ")
    assert "tokenizer.save_pretrained" in message and "data.tokenizer=" in message
    assert "holds no tokenizer files" in message
    # tokenizer files of no vocabulary (transformers 5 ignores BertTokenizerFast(vocab_file=)):
    # was "holds no tokenizer files" of a folder that holds tokenizer.json
    BertTokenizerFast().save_pretrained(tmp_path)
    with pytest.raises(SFTError) as err:
        load_tokenizer(str(tmp_path))
    assert "its files there (tokenizer.json) hold none. Save the tokenizer" in single_line(err)
    AutoTokenizer.from_pretrained(resolve_model_name("minilm")).save_pretrained(tmp_path)
    assert len(load_tokenizer(str(tmp_path))) == 30522  # with its files, it loads


@pytest.mark.skipif(
    importlib.util.find_spec("sentencepiece") is not None, reason="sentencepiece is installed"
)
def test_a_sentencepiece_only_tokenizer_names_the_package_it_needs(tmp_path: Path) -> None:
    """A folder whose tokenizer is only spiece.model (ALBERT, DeBERTa-v3, XLM-R style): the
    error was transformers' "`tiktoken` is required ... pip install tiktoken", its fallback's
    package, not the one that reads the file."""
    from transformers import AlbertConfig

    from sft.data.token_cache import load_tokenizer

    AlbertConfig(vocab_size=100).save_pretrained(tmp_path)
    (tmp_path / "spiece.model").write_bytes(b"\x00 a SentencePiece model")
    with pytest.raises(SFTError) as err:
        load_tokenizer(str(tmp_path))
    assert single_line(err) == (
        f"could not load tokenizer from {tmp_path}: its tokenizer is a SentencePiece model "
        "(spiece.model), which transformers reads only with the sentencepiece package: pip "
        "install sentencepiece (or save the tokenizer there with a tokenizer.json, "
        "tokenizer.save_pretrained)"
    )


def test_trust_remote_code_is_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    default = inspect.signature(hf_backbone.huggingface).parameters["trust_remote_code"].default
    assert default is False
    seen: list[object] = []
    original = hf_backbone.load_pretrained

    def spy(load, name, what, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return original(load, name, what, **kwargs)

    monkeypatch.setattr(hf_backbone, "load_pretrained", spy)
    create_backbone("huggingface", config_overrides=TINY)
    assert seen == [False]


def test_input_size_and_pixel_statistics_do_not_apply() -> None:
    with pytest.raises(SFTError) as err:
        create_backbone("huggingface", input_size=224, config_overrides=TINY)
    assert "input_size" in single_line(err)
    assert resolve_input_spec({"name": "huggingface", "model_name_or_path": "minilm"}) == (
        InputSpec("text")
    )


def test_gradient_checkpointing_keeps_the_gradients(tokenizer) -> None:
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    plain = tiny(config_overrides=no_dropout)
    ckpt = tiny(config_overrides=no_dropout, gradient_checkpointing=True)
    assert any(getattr(m, "gradient_checkpointing", False) for m in ckpt.model.modules())
    assert not any(getattr(m, "gradient_checkpointing", False) for m in plain.model.modules())
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    for model in (plain, ckpt):
        model.train()
        model(**batch).pow(2).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


# --- layer-wise LR decay ------------------------------------------------------------------------


def test_layer_ids() -> None:
    model = tiny()
    names = dict(model.named_parameters())
    assert model.layer_id("model.embeddings.word_embeddings.weight") == 0
    assert model.layer_id("model.encoder.layer.0.attention.self.query.weight") == 1
    assert model.layer_id("model.encoder.layer.1.output.LayerNorm.bias") == 2
    assert {model.layer_id(n) for n in names} == {0, 1, 2}
    # other architectures' names
    assert model.layer_id("model.transformer.layer.1.ffn.lin1.weight") == 2  # DistilBERT
    assert model.layer_id("model.encoder.layers.1.fc1.weight") == 2
    assert model.layer_id("model.encoder.rel_embeddings.weight") == 0  # DeBERTa
    assert model.layer_id("model.pooler.dense.weight") == 3
    assert model.layer_id("model.encoder.LayerNorm.weight") == 3


def tiny_classifier(**overrides) -> SFTClassifier:
    torch.manual_seed(0)
    return SFTClassifier(backbone=TINY_BACKBONE, num_classes=2, **overrides)


def test_layer_decay_param_groups() -> None:
    model = tiny_classifier(lr_backbone=1e-3, lr_head=1e-2, layer_decay=0.5, weight_decay=0.05)
    groups = {g["name"]: g for g in model.configure_optimizers()["optimizer"].param_groups}
    expected = {"head", "head/no_decay"} | {
        f"backbone/layer_{k:02d}{suffix}" for k in (0, 1, 2) for suffix in ("", "/no_decay")
    }
    assert set(groups) == expected
    # L = 2 layers: layer k at 1e-3 * 0.5 ** (3 - k); embeddings slowest, top layer fastest
    for k in (0, 1, 2):
        for suffix in ("", "/no_decay"):
            assert groups[f"backbone/layer_{k:02d}{suffix}"]["lr"] == pytest.approx(
                1e-3 * 0.5 ** (3 - k)
            )
    assert groups["head"]["lr"] == 1e-2
    assert groups["backbone/layer_01"]["weight_decay"] == 0.05
    assert groups["backbone/layer_01/no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim <= 1 for p in groups["backbone/layer_01/no_decay"]["params"])
    all_params = [p for g in groups.values() for p in g["params"]]
    assert len(all_params) == len({id(p) for p in all_params}) == len(list(model.parameters()))


def test_layer_decay_needs_layer_ids() -> None:
    model = SFTClassifier(
        backbone={"_target_": "sft.models.backbones.create_backbone", "name": "small_cnn"},
        num_classes=3,
        layer_decay=0.9,
    )
    with pytest.raises(SFTError, match="layer_decay"):
        model.configure_optimizers()
    with pytest.raises(SFTError, match="layer_decay"):
        tiny_classifier(layer_decay=1.5).configure_optimizers()


# --- the classifier -----------------------------------------------------------------------------


def test_classifier_trains_on_text(tokenizer) -> None:
    model = tiny_classifier(lr_backbone=1e-3, lr_head=1e-2, layer_decay=0.8)
    batch = {**tokenizer(SENTENCES, padding=True, return_tensors="pt"), "labels": LABELS}
    optimizer = model.configure_optimizers()["optimizer"]
    model.train()
    losses = []
    for _ in range(10):
        inputs, y = split_batch(batch)
        loss = F.cross_entropy(model(inputs), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_checkpoint_round_trip(tokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = {**TINY_BACKBONE, "pretrained": True, "config_overrides": None}
    model = SFTClassifier(backbone=backbone, num_classes=2, regularizer="l2sp").eval()
    with torch.no_grad():  # a non-zero branch, as after training
        model.head.branch.weight.normal_()
    path = tmp_path / "model.ckpt"
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, path)
    loaded = load_classifier(path)
    assert loaded.hparams.backbone["pretrained"] is False, "weights come from the checkpoint"
    inputs = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    with torch.no_grad():
        assert torch.equal(model(inputs), loaded(inputs))


def test_backbone_checkpoint_option_reads_a_classifier_checkpoint(tokenizer, tmp_path) -> None:
    model = tiny_classifier().eval()
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict()}, path)
    backbone = create_backbone(
        "huggingface", pretrained=True, checkpoint=str(path), config_overrides=TINY
    ).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(backbone(**batch), model.backbone(**batch))


def test_model_configs_compose(tmp_path: Path) -> None:
    cfg = compose_config("train", ["model=minilm_fused"], tmp_path)
    assert cfg.model.backbone.name == "huggingface" and cfg.model.layer_decay is None
    model = instantiate(cfg.model)
    assert isinstance(model.backbone, HFEncoder) and model.backbone.num_features == 384
    bert = compose_config("train", ["model=bert_base_fused"], tmp_path).model
    assert bert.backbone.model_name_or_path == "bert-base-uncased"
    assert bert.backbone.pooling == "cls" and bert.lr_backbone == 2e-5
    assert bert.scheduler == cfg.model.scheduler


def tiny_roberta(folder: Path, texts: list[str]) -> Path:
    """A 2-layer RoBERTa with a byte-level BPE tokenizer trained on `texts`, saved as a local
    folder (as a hub snapshot is): another family than BERT, with its own tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=600, special_tokens=specials, show_progress=False)
    bpe.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
    )
    tokenizer.save_pretrained(folder)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        **TINY,
        max_position_embeddings=80,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    RobertaModel(config).save_pretrained(folder)
    return folder


def test_a_roberta_encoder_from_a_local_folder_trains_the_sst2_recipe(tmp_path, data_dir) -> None:
    """The text recipe with another encoder family than BERT (a MiniLMv2 distilled from RoBERTa
    is what reaches 0.915 on SST-2, experiments/runs.md): its tokenizer, its padding id, layer
    decay by its layer names, and the FastDropout and L2-SP defaults, through `train`."""
    from inference_checkpoints import SHORT

    from sft.jobs.train import train

    lines = (data_dir / "sst2" / "train.tsv").read_text().splitlines()[1:400]
    folder = tiny_roberta(tmp_path / "tiny_roberta", [line.split("\t")[0] for line in lines])
    run = tmp_path / "run"
    metrics = train(
        compose_config(
            "train",
            [
                "experiment=sst2_minilm",
                *SHORT,
                "trainer.accelerator=cpu",
                f"model.backbone.model_name_or_path={folder}",
                "model.layer_decay=0.9",
                "data.max_length=64",
                "data.samples_per_class=32",
                "data.batch_size=16",
                "+trainer.limit_val_batches=2",
                "trainer.val_check_interval=1.0",
                f"paths.cache_dir={tmp_path / 'cache'}",
            ],
            run,
        )
    )
    assert 0.0 <= float(metrics["val/acc_best"]) <= 1.0
    model = load_classifier(run / "checkpoints" / "last.ckpt")
    assert model.backbone.model.config.model_type == "roberta"
    assert model.backbone.model.embeddings.word_embeddings.padding_idx == 1


# --- encoders and tokenizers users bring --------------------------------------------------------


def test_a_left_padding_tokenizer_pads_on_the_right_for_sfts_pooling(tmp_path: Path) -> None:
    """With padding at the start, cls pooling took a [PAD] and mean pooling shifted positions:
    a text's features and predictions changed with the other texts of its batch, silently."""
    from sft.data.token_batches import TokenBatchCollator
    from sft.data.token_cache import load_tokenizer

    saved = AutoTokenizer.from_pretrained(resolve_model_name("minilm"))
    saved.padding_side = "left"
    saved.save_pretrained(tmp_path)
    tokenizer = load_tokenizer(str(tmp_path))
    batch = TokenBatchCollator(tokenizer)([tokenizer("a tedious mess"), tokenizer("warm")])
    assert batch["input_ids"][1, 0] == tokenizer.cls_token_id
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0]
    model = tiny().eval()
    with torch.no_grad():
        alone = model(**TokenBatchCollator(tokenizer)([tokenizer("warm")]))
        in_batch = model(**batch)[1:]
    torch.testing.assert_close(alone, in_batch)


def test_a_tokenizer_without_a_padding_token_is_one_line(tmp_path: Path) -> None:
    from sft.data.token_cache import load_tokenizer

    saved = AutoTokenizer.from_pretrained(resolve_model_name("minilm"))
    saved.pad_token = None
    saved.save_pretrained(tmp_path)
    with pytest.raises(SFTError) as err:
        load_tokenizer(str(tmp_path))
    assert single_line(err).startswith(f"tokenizer '{tmp_path}' has no padding token")


def test_a_relative_model_folder_is_kept_absolute_in_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As typed, `models/bert` was looked up from wherever sft-eval ran later: a missing folder
    there, or another model of that name loaded silently."""

    folder = tmp_path / "models" / "bert"
    tiny().model.config.save_pretrained(folder)
    monkeypatch.chdir(tmp_path)
    backbone = {**TINY_BACKBONE, "model_name_or_path": "models/bert", "config_overrides": None}
    model = SFTClassifier(backbone=backbone, num_classes=2)
    assert model.hparams.backbone["model_name_or_path"] == str(folder)
    datamodule = TextClassificationDataModule(data_dir=str(tmp_path), tokenizer="models/bert")
    assert datamodule.hparams.tokenizer == str(folder)
    # aliases and hub ids stay as they are
    assert (
        SFTClassifier(backbone=TINY_BACKBONE, num_classes=2).hparams.backbone["model_name_or_path"]
        == "minilm"
    )


def test_a_batch_longer_than_the_position_table_is_one_line() -> None:
    model = tiny(config_overrides={"max_position_embeddings": 16}).eval()
    model(input_ids=torch.full((2, 8), 1000))  # a first batch that fits: later ones are checked
    with pytest.raises(SFTError) as err:
        model(input_ids=torch.full((2, 20), 1000), attention_mask=torch.ones(2, 20, dtype=int))
    assert single_line(err) == (
        "model.backbone: the bert model "
        f"'{resolve_model_name('minilm')}' has 16 positions, and a batch holds 20 tokens: set "
        "data.max_length=16 (or less)"
    )


def test_a_max_length_past_the_position_table_is_refused_before_any_batch(tmp_path) -> None:
    """data.max_length longer than the backbone's positions trained on until a batch was that
    long: for a run whose texts were all shorter, only sft-predict of a longer text failed.
    GPT-2's table (`wpe`) was not looked for: a longer batch was an IndexError traceback."""
    from transformers import GPT2Config

    backbone = {**TINY_BACKBONE, "config_overrides": {**TINY, "max_position_embeddings": 16}}
    model = SFTClassifier(backbone=backbone, num_classes=2)
    assert model.input_spec.max_positions == 16
    for length, refused in ((16, False), (17, True)):
        data = TextClassificationDataModule(data_dir=str(tmp_path), max_length=length)
        if refused:
            with pytest.raises(SFTError) as err:
                data.configure_input(model.input_spec)
            assert single_line(err) == (
                "data.max_length=17 exceeds the 16 positions of the model's backbone: set "
                "data.max_length=16 (or less)"
            )
        else:
            data.configure_input(model.input_spec)
    # batches padded to a multiple past the table (was: refused at the first batch, with the
    # advice to set the data.max_length already set)
    data = TextClassificationDataModule(
        data_dir=str(tmp_path), max_length=12, pad_to_multiple_of=10
    )
    with pytest.raises(SFTError) as err:
        data.configure_input(model.input_spec)
    assert single_line(err).startswith(
        "data.pad_to_multiple_of=10 pads a batch of data.max_length=12 tokens to 20, past the 16 "
        "positions of the model's backbone: give a smaller multiple"
    )
    # as a checkpoint rebuilds it
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    assert load_classifier(path).input_spec.max_positions == 16
    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=12, vocab_size=2000).save_pretrained(
        folder
    )
    gpt2 = create_backbone("huggingface", model_name_or_path=str(folder)).eval()
    assert gpt2.max_positions == 12
    with pytest.raises(SFTError, match=r"has 12 positions, and a batch holds 13 tokens"):
        gpt2(input_ids=torch.ones(1, 13, dtype=torch.long))


def test_a_folder_whose_config_and_weights_disagree(tmp_path, caplog) -> None:
    """A config.json of other shapes than the weights was Hydra's InstantiationException
    ("look at the above report"); one with more layers than the weights trained those layers
    from random weights with only transformers' report to say so."""
    folder = tmp_path / "bert"
    tiny().model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(SFTError) as err:
        create_backbone("huggingface", model_name_or_path=str(folder), pretrained=True)
    message = single_line(err)
    assert message.startswith(f"model.backbone: the weights of '{folder}' do not fit its config")
    assert "6 weight(s) (encoder.layer.0.intermediate.dense.bias, " in message
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with caplog.at_level(logging.WARNING, logger="sft"):
        create_backbone("huggingface", model_name_or_path=str(folder), pretrained=True)
    (said,) = [r.getMessage() for r in caplog.records if r.name.startswith("sft")]
    assert said.startswith("model.backbone: 16 weight(s) (encoder.layer.2.attention.output.")
    assert f"are not in the weights of '{folder}' and start random" in said
    caplog.clear()
    (folder / "config.json").write_text(json.dumps(config))  # as saved: nothing said
    with caplog.at_level(logging.WARNING, logger="sft"):
        create_backbone("huggingface", model_name_or_path=str(folder), pretrained=True)
    assert not [r for r in caplog.records if r.name.startswith("sft")]


def test_a_decoder_only_model_is_refused_with_cls_pooling_and_warned_of(tmp_path, caplog):
    """GPT-2 trained as an encoder without a word; with pooling=cls its features were the
    first token's, which a causal model computes from that token alone: every text the same."""
    from transformers import GPT2Config

    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=12, vocab_size=2000).save_pretrained(
        folder
    )
    with pytest.raises(SFTError) as err:
        create_backbone("huggingface", model_name_or_path=str(folder), pooling="cls")
    assert single_line(err).startswith(
        f"model.backbone: the gpt2 model '{folder}' is a causal (decoder-only) model: each token "
        "sees only the tokens before it, so its first token (pooling=cls) holds nothing of the "
        "rest of the text: set model.backbone.pooling=mean"
    )
    with caplog.at_level(logging.WARNING, logger="sft"):
        create_backbone("huggingface", model_name_or_path=str(folder), pooling="mean")
        tiny(pooling="cls")  # an encoder: nothing said
    (said,) = [r.getMessage() for r in caplog.records if r.name.startswith("sft")]
    assert "is a causal (decoder-only) model" in said and "pooling=mean" in said
    # an encoder is not run to tell: BigBird's first short input switched it to full attention
    # for good (a long-document model then trained at O(n^2))
    from transformers import BigBirdConfig

    BigBirdConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=1024,
        block_size=8,
        num_random_blocks=2,
    ).save_pretrained(tmp_path / "bigbird")
    bigbird = create_backbone("huggingface", model_name_or_path=str(tmp_path / "bigbird"))
    assert bigbird.model.config.attention_type == "block_sparse"
    assert bigbird.model.encoder.layer[0].attention.self.__class__.__name__.startswith("BigBird")
    assert bigbird.model.attention_type == "block_sparse"


def test_a_transformers_models_own_state_dict_is_a_backbone_checkpoint(tmp_path) -> None:
    """`torch.save(AutoModel.from_pretrained(...).state_dict())` as model.backbone.checkpoint
    was refused: its keys lack the backbone's `model.` and hold the pooler sft drops."""
    folder = tmp_path / "bert"
    tiny().model.save_pretrained(folder)
    plain = AutoModel.from_pretrained(folder)
    with torch.no_grad():
        plain.embeddings.word_embeddings.weight.add_(1.0)  # other weights than the folder's
    assert plain.pooler is not None
    state = plain.state_dict()
    # transformers before 4.31 saved this buffer; it is rebuilt, not loaded (was: unexpected key)
    state["embeddings.position_ids"] = plain.embeddings.position_ids.clone()
    torch.save(state, tmp_path / "weights.pt")
    backbone = create_backbone(
        "huggingface", model_name_or_path=str(folder), checkpoint=str(tmp_path / "weights.pt")
    )
    assert torch.equal(
        backbone.model.embeddings.word_embeddings.weight, plain.embeddings.word_embeddings.weight
    )
    # another model's weights are still refused
    torch.save(tiny(config_overrides={"num_hidden_layers": 1}).model.state_dict(), tmp_path / "x")
    with pytest.raises(SFTError, match=r"do not fit the backbone: 16 missing keys"):
        create_backbone(
            "huggingface", model_name_or_path=str(folder), checkpoint=str(tmp_path / "x")
        )


def test_another_models_tokenizer_is_one_line() -> None:
    model = tiny(config_overrides={"vocab_size": 1500}).eval()
    ids = torch.tensor([[101, 2307, 102]])  # MiniLM's ids: 2307 is past 1,500 rows
    with pytest.raises(SFTError) as err:
        model(input_ids=ids)
    message = single_line(err)
    assert "token id 2307 is outside the 1500-token vocabulary of the bert model" in message
    assert "the tokenizer (data.tokenizer) is another model's" in message


def test_config_overrides_name_fields_the_config_has() -> None:
    # what from_pretrained takes besides the config's fields still works
    assert (
        tiny(config_overrides={"attn_implementation": "eager"}).model.config._attn_implementation
        == "eager"
    )
    with pytest.raises(SFTError) as err:
        tiny(config_overrides={"num_hidden_layer": 1})
    assert single_line(err) == (
        "model.backbone.config_overrides: bert configs have no field 'num_hidden_layer' "
        "(did you mean 'num_hidden_layers'?)"
    )


def test_config_override_values_that_do_not_fit_are_one_line() -> None:
    """A value of the wrong type, and a shape the pretrained weights do not have, were Hydra's
    InstantiationException reports (StrictDataclassFieldValidationError; "You set
    ignore_mismatched_sizes to False")."""
    with pytest.raises(SFTError) as err:
        tiny(config_overrides={"hidden_dropout_prob": "abc"})
    assert single_line(err).startswith(
        "model.backbone.config_overrides: Validation error for field 'hidden_dropout_prob'"
    )
    with pytest.raises(SFTError) as err:
        create_backbone("huggingface", pretrained=True, config_overrides={"intermediate_size": 64})
    assert single_line(err) == (
        "model.backbone.config_overrides intermediate_size: the pretrained weights of 'minilm' "
        "do not fit a model of these settings (their shapes differ); change settings that keep "
        "the shapes (dropout, ...), or train from scratch with model.backbone.pretrained=false"
    )


def test_an_encoder_decoder_is_refused(tmp_path: Path) -> None:
    from transformers import T5Config

    T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8).save_pretrained(tmp_path)
    with pytest.raises(SFTError) as err:
        create_backbone("huggingface", model_name_or_path=str(tmp_path))
    assert "is an encoder-decoder (t5); sft fine-tunes encoders" in single_line(err)


def test_layer_decay_refuses_an_encoder_whose_layers_are_shared(tmp_path: Path) -> None:
    """ALBERT's one shared layer carries no layer index: every weight trained at the top rate
    and only the embeddings decayed, silently."""
    from transformers import AlbertConfig

    AlbertConfig(
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
    ).save_pretrained(tmp_path)
    backbone = {**TINY_BACKBONE, "model_name_or_path": str(tmp_path), "config_overrides": None}
    model = SFTClassifier(backbone=backbone, num_classes=2, layer_decay=0.8)
    with pytest.raises(SFTError) as err:
        model.configure_optimizers()
    assert single_line(err).startswith(
        "model.layer_decay: no weight of the backbone is named after its layer(s) 1, 2 of 1..2"
    )
