"""sft.data.text: SST-2 TSV, SST trees, users' TSV/CSV/JSONL, HF datasets (offline error), the
token cache and length-grouped batching. Offline, CPU, the packaged MiniLM tokenizer.

Needs the text datasets under $SFT_DATA_DIR (default <repo>/data): `make data` links sst2/, sst/.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import logged_warnings, logs_warning
from hydra.utils import instantiate
from torch.utils.data import DistributedSampler

from sft.data import LengthGroupedSampler, TextClassificationDataModule
from sft.data.length_grouped import padding_fraction
from sft.data.readers.sst_trees import read_sst_trees
from sft.data.sst_trees import detokenize
from sft.errors import SFTError
from sft.hub import resolve_model_name
from sft.models import SFTClassifier
from sft.utils.config_types import check_config_types

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("SFT_DATA_DIR") or REPO / "data")
SST2, SST = DATA_ROOT / "sst2", DATA_ROOT / "sst"
SST5_TRAIN_COUNTS = [1092, 2218, 1624, 2322, 1288]


def _require(path: Path) -> Path:
    if not path.is_dir():
        pytest.fail(f"text data missing: expected {path}. Run `make data` (or set SFT_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokens")


def make_dm(data_dir: Path | str, cache: Path, **kwargs) -> TextClassificationDataModule:
    return TextClassificationDataModule(
        str(data_dir), tokenizer="minilm", cache_dir=str(cache), **kwargs
    )


def sst2_dm(cache: Path, **kwargs) -> TextClassificationDataModule:
    kwargs = {"test_split": "test.tsv", "label_names": ["negative", "positive"], **kwargs}
    return make_dm(_require(SST2), cache, **kwargs)


@pytest.fixture(scope="session")
def sst2(token_cache) -> TextClassificationDataModule:
    """SST-2 train/dev/test, tokenised once for the whole session (the cache is reused below)."""
    dm = sst2_dm(token_cache)
    dm.prepare_data()
    dm.setup()
    return dm


# ---- parsing the shared files -------------------------------------------------------------------
def test_sst2_tsv_counts(sst2):
    assert sst2.num_classes == 2 and sst2.class_names == ["negative", "positive"]
    assert len(sst2.train_data) == 67_349
    assert torch.bincount(sst2.train_data.labels).tolist() == [29_780, 37_569]
    assert torch.bincount(sst2.val_data.labels).tolist() == [428, 444]
    assert len(sst2.test_data) == 1_821
    assert (sst2.test_data.labels == -1).all()  # test.tsv has no label column
    assert not sst2.has_labelled_test


def test_has_labelled_test_before_setup(token_cache):
    assert sst2_dm(token_cache).has_labelled_test is False  # reads test.tsv's header only
    assert sst2_dm(token_cache, test_split="dev.tsv").has_labelled_test is True
    sst5 = make_dm(
        _require(SST), token_cache, source="sst_trees", train_split="train.txt", val_split="dev.txt"
    )
    assert sst5.has_labelled_test is False  # no test split: evaluation is on dev


@pytest.fixture(scope="module")
def sst5_train():
    return read_sst_trees(_require(SST) / "train.txt", binary=False, phrases=False)


def test_sst_trees_counts(sst5_train):
    assert len(sst5_train) == 8_544
    assert [Counter(sst5_train.labels)[c] for c in range(5)] == SST5_TRAIN_COUNTS
    assert len(read_sst_trees(SST / "dev.txt", binary=False, phrases=False)) == 1_101
    assert len(read_sst_trees(SST / "dev.txt", binary=True, phrases=False)) == 872
    # detokenised: PTB escapes undone, clitics and punctuation glued
    first = sst5_train.texts[0]
    assert first.startswith('The Rock is destined to be the 21st Century\'s new "Conan"')
    assert not any("-LRB-" in t or "``" in t for t in sst5_train.texts)


def test_sst_phrases_many_more_examples(sst5_train):
    phrases = read_sst_trees(SST / "train.txt", binary=True, phrases=True)
    sentences = {
        t for t, label in zip(sst5_train.texts, sst5_train.labels, strict=True) if label != 2
    }
    assert len(phrases) > 8 * len(sentences)  # 77,616 distinct non-neutral phrases
    assert len(set(phrases.texts)) == len(phrases)  # deduplicated
    assert set(phrases.labels) == {0, 1}
    assert sentences <= set(phrases.texts)


def test_detokenize():
    words = [
        "-LRB-",
        "The",
        "Rock",
        "'s",
        "``",
        "Conan",
        "''",
        "-RRB-",
        ",",
        "co-writer\\/director",
        "does",
        "n't",
        "3\\*",
    ]
    assert detokenize(words) == "(The Rock's \"Conan\"), co-writer/director doesn't 3*"


def test_sst2_trees_datamodule(token_cache):
    """Binary sentence-level SST: the neutral trees dropped, 0,1 -> 0 and 3,4 -> 1."""
    dm = make_dm(
        _require(SST),
        token_cache,
        source="sst_trees",
        train_split="train.txt",
        val_split="dev.txt",
        binary=True,
    )
    dm.setup("fit")
    assert dm.class_names == ["negative", "positive"]
    assert len(dm.train_data) == 8_544 - SST5_TRAIN_COUNTS[2]
    neg, pos = sum(SST5_TRAIN_COUNTS[:2]), sum(SST5_TRAIN_COUNTS[3:])
    assert torch.bincount(dm.train_data.labels).tolist() == [neg, pos]
    assert len(dm.val_data) == 872


# ---- batches -------------------------------------------------------------------------------
def test_batches_are_model_inputs(sst2):
    batch = next(iter(sst2.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert all(v.dtype == torch.int64 for v in batch.values())
    assert batch["labels"].shape == (32,)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape and (ids[mask == 0] == 0).all()  # [PAD] = 0
    assert mask.sum(1).max() == ids.shape[1]  # padded to the longest row only
    assert sst2.transform_batch(batch, train=True) is batch


def test_predictions_in_file_order(sst2):
    """SST-2's test split has no labels: predictions are of validation, the split sft-eval
    scores (were: the unlabelled test rows)."""
    loader = sst2.predict_dataloader()
    rows = [r for b in loader for r in b["input_ids"]]
    assert len(rows) == 872
    assert torch.cat([b["labels"] for b in loader]).equal(sst2.val_data.labels)
    first = (SST2 / "dev.tsv").read_text().splitlines()[1].split("\t")[0]
    expected = sst2.tokenizer(first)["input_ids"]
    assert rows[0][: len(expected)].tolist() == expected
    with pytest.raises(SFTError, match="no labels to test on"):
        sst2.test_dataloader()


def test_probe_loader_fixed_order_sorted_by_length(sst2):
    dm = sst2_dm(sst2.cache_dir, samples_per_class=8)
    dm.setup("fit")
    batches = list(dm.probe_dataloader())
    assert [b["labels"].tolist() for b in batches] == [
        b["labels"].tolist() for b in dm.probe_dataloader()
    ]
    order = torch.argsort(dm.train_data.lengths, stable=True)
    labels = torch.cat([b["labels"] for b in batches])
    assert labels.tolist() == dm.train_data.labels[order].tolist()
    lengths = torch.cat([b["attention_mask"].sum(1) for b in batches])
    assert torch.equal(lengths, dm.train_data.lengths[order])


# ---- token cache ---------------------------------------------------------------------------
def test_token_cache_hit_on_second_run(sst2, caplog):
    assert sst2.cache_hits == {"train": False, "val": False, "test": False}
    again = sst2_dm(sst2.cache_dir)
    with caplog.at_level(logging.INFO, logger="sft.data.token_cache"):
        again.setup()
    assert again.cache_hits == {"train": True, "val": True, "test": True}
    assert f"tokens: cache hit {again.cache_files['train']}" in caplog.text
    for role in ("train", "val", "test"):
        old, new = sst2.load_split(role), again.load_split(role)
        assert torch.equal(old.input_ids, new.input_ids) and torch.equal(old.offsets, new.offsets)
    assert old.input_ids.dtype == torch.int32
    # atomic writes leave no temp files behind
    assert not [p for p in sst2.cache_dir.iterdir() if p.name.startswith(".")]


def _tiny_tsv(folder: Path, rows: list[tuple[str, str]]) -> None:
    folder.mkdir(exist_ok=True)
    # dev: the same examples in another order (a copy of train.tsv is warned about)
    for name, ordered in (("train.tsv", rows), ("dev.tsv", rows[::-1])):
        body = "".join(f"{t}\t{label}\n" for t, label in ordered)
        (folder / name).write_text("sentence\tlabel\n" + body)


def test_a_run_continued_on_other_training_data_is_warned(tmp_path, token_cache, caplog):
    """resume= after the training file was edited (or another subset taken) continued mid-epoch
    at a position and schedule set for the old data, without a word."""
    d = tmp_path / "data"
    _tiny_tsv(d, [("good", "1"), ("bad", "0"), ("fine", "1"), ("awful", "0")])
    trained = make_dm(d, token_cache, batch_size=2)
    trained.setup("fit")
    state = trained.state_dict()
    same = make_dm(d, token_cache, batch_size=2)
    same.setup("fit")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        same.load_state_dict(state)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    subset = make_dm(d, token_cache, batch_size=2, samples_per_class=1)
    subset.setup("fit")
    with logs_warning(caplog, r"another subset of the same file; then 4 examples, now 2\)"):
        subset.load_state_dict(state)
    (d / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    edited = make_dm(d, token_cache, batch_size=2)
    edited.setup("fit")
    warning = (
        r"data/train\.tsv: not the training data the checkpoint's run read \(the file or the "
        r"settings it is read with changed; then 4 examples, now 2\): the run continues at"
    )
    with logs_warning(caplog, warning):
        edited.load_state_dict(state)


def test_a_cache_file_of_another_user_a_link_or_another_keys_is_not_read(
    tmp_path, monkeypatch, caplog
):
    """Whoever could write to a shared cache folder could change the labels a run trained on: a
    cache file owned by another user (not root), a link, or a file of another key (renamed) is
    not read; this user's own file takes its place."""
    import os

    _tiny_tsv(tmp_path / "d", [("good", "1"), ("bad", "0"), ("fine", "1"), ("awful", "0")])
    cache = tmp_path / "cache"
    first = make_dm(tmp_path / "d", cache, batch_size=2)
    first.setup("fit")
    truth = first.train_data.labels.tolist()
    path = first.cache_files["train"]
    poisoned = torch.load(path, weights_only=True)
    poisoned["labels"] = 1 - poisoned["labels"]

    def read_again() -> TextClassificationDataModule:
        dm = make_dm(tmp_path / "d", cache, batch_size=2)
        dm.setup("fit")
        assert dm.train_data.labels.tolist() == truth
        return dm

    # a file of another key, renamed onto this one's name
    torch.save({**poisoned, "key": "another"}, path)
    with logs_warning(caplog, r"holds another split's tokens; tokenizing again"):
        assert not read_again().cache_hits["train"]
    # a link to a poisoned file
    elsewhere = tmp_path / "elsewhere.pt"
    torch.save(poisoned, elsewhere)
    path.unlink()
    path.symlink_to(elsewhere)
    with logs_warning(caplog, r"is a link, who could have changed its labels or tokens: not read"):
        linked = read_again()
    own = linked.cache_files["train"]
    assert own.name.endswith(f"-uid{os.getuid()}.pt") and own.is_file()
    assert read_again().cache_hits["train"]  # this user's own file, from then on
    # another user's file
    path.unlink()
    torch.save(poisoned, path)
    own.unlink()
    if os.getuid() == 0:
        os.chown(path, 4242, -1)
    else:  # a file of this user, read as by another
        real = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: real + 1)
    with logs_warning(caplog, r"belongs to another user \(uid \d+\), who could have changed"):
        assert not read_again().cache_hits["train"]


def test_token_cache_misses_on_changes(tmp_path):
    rows = [("a fine film", "1"), ("a dull film", "0"), ('"quoted" words', "1")]
    _tiny_tsv(tmp_path / "d", rows)
    cache = tmp_path / "cache"

    def hits(**kwargs) -> bool:
        dm = make_dm(tmp_path / "d", cache, batch_size=2, **kwargs)
        dm.setup("fit")
        return dm.cache_hits["train"]

    assert not hits()
    assert hits()
    assert not hits(max_length=4)  # another max_length: another key
    assert hits(max_length=4)
    _tiny_tsv(tmp_path / "d", [*rows, ("one more", "0")])  # new file content
    assert not hits()
    assert len(list(cache.glob("d-train-*.pt"))) == 3


# ---- length-grouped batching ---------------------------------------------------------------
def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def test_length_grouped_once_per_epoch_and_less_padding(sst2):
    lengths = sst2.train_data.lengths
    n = len(lengths)
    sampler = LengthGroupedSampler(lengths, batch_size=32, seed=0)
    epoch0 = list(sampler)
    assert sorted(epoch0) == list(range(n))
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(epoch1) == list(range(n)) and epoch1 != epoch0
    random = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    grouped_pad = padding_fraction(lengths, _batches(epoch0, 32))
    random_pad = padding_fraction(lengths, _batches(random, 32))
    # measured: random 0.67, grouped 0.046 (pools of 50 batches)
    assert grouped_pad < random_pad / 2


@pytest.mark.parametrize("n", [67_348, 67_349])
def test_length_grouped_ddp_ranks(sst2, n):
    lengths = sst2.train_data.lengths[:n]
    ranks = []
    for rank in range(2):
        sampler = LengthGroupedSampler(lengths, batch_size=32, num_replicas=2, rank=rank, seed=3)
        sampler.set_epoch(5)
        ranks.append(list(sampler))
    assert len(ranks[0]) == len(ranks[1]) == -(-n // 2)  # equal steps on both ranks
    both = ranks[0] + ranks[1]
    assert set(both) == set(range(n))  # covering
    # disjoint; an odd count repeats one example, as DistributedSampler pads
    assert len(both) - len(set(both)) == (2 - n % 2) % 2
    batches = [b for r in ranks for b in _batches(r, 32)]
    assert padding_fraction(lengths, batches) < 0.1


def test_train_loader_shards_itself_under_ddp(sst2):
    # Lightning wraps only samplers that are not DistributedSamplers (that wrapper would
    # re-shuffle the length groups); ours is one, sharded by trainer.distributed_sampler_kwargs.
    sst2.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": 1})
    try:
        loader = sst2.train_dataloader()
    finally:
        sst2.trainer = None
    assert isinstance(loader.sampler, DistributedSampler)
    assert (loader.sampler.num_replicas, loader.sampler.rank) == (2, 1)
    assert len(loader.sampler) == -(-len(sst2.train_data) // 2)


def test_group_by_length_off_is_random_batching(sst2):
    dm = sst2_dm(sst2.cache_dir, group_by_length=False)
    dm.setup("fit")
    assert isinstance(dm.train_dataloader().sampler, torch.utils.data.RandomSampler)


# ---- few-label subsets ---------------------------------------------------------------------
def test_few_label_subsets(sst2):
    dm = sst2_dm(sst2.cache_dir, samples_per_class=10, seed=1)
    dm.setup("fit")
    assert torch.bincount(dm.train_data.labels).tolist() == [10, 10]
    dm = sst2_dm(sst2.cache_dir, train_fraction=0.01)
    dm.setup("fit")
    assert torch.bincount(dm.train_data.labels).tolist() == [298, 376]
    assert len(dm.val_data) == 872  # validation stays the whole dev set


# ---- users' files --------------------------------------------------------------------------
NAMES = ["negative", "neutral", "positive"]


def test_user_tsv_csv_jsonl_string_labels(tmp_path, token_cache):
    rows = [('great, "really" great', "positive"), ("meh", "neutral"), ("awful", "negative")]
    (tmp_path / "tsv").mkdir()
    for split in ("train", "dev"):
        (tmp_path / "tsv" / f"{split}.tsv").write_text(
            "review\tsentiment\n" + "".join(f"{t}\t{s}\n" for t, s in rows)
        )
    (tmp_path / "csv").mkdir()
    for split in ("train", "dev"):
        # with the byte-order mark spreadsheet programs write
        (tmp_path / "csv" / f"{split}.csv").write_text(
            '\ufeffreview,sentiment\n"great, ""really"" great",positive\nmeh,1\nawful,negative\n'
        )
    (tmp_path / "jsonl").mkdir()
    for split in ("train", "dev"):
        lines = [json.dumps({"review": t, "other": t, "sentiment": s}) for t, s in rows]
        (tmp_path / "jsonl" / f"{split}.jsonl").write_text("\n".join(lines) + "\n\n")
    (tmp_path / "jsonl" / "test.jsonl").write_text(json.dumps({"review": "?", "other": "?"}) + "\n")
    for source in ("tsv", "csv", "jsonl"):
        extra = (
            {"test_split": "test.jsonl", "text_pair_column": "other"} if source == "jsonl" else {}
        )
        dm = make_dm(
            tmp_path / source,
            token_cache,
            source=source,
            train_split=f"train.{source}",
            val_split=f"dev.{source}",
            text_column="review",
            label_column="sentiment",
            label_names=NAMES,
            batch_size=3,
            **extra,
        )
        if source == "jsonl":
            assert not dm.has_labelled_test
        dm.setup()
        assert dm.class_names == NAMES
        assert dm.train_data.labels.tolist() == [2, 1, 0], source
        batch = next(iter(dm.val_dataloader()))
        if source == "jsonl":  # sentence pairs: the second segment has token type 1
            assert batch["token_type_ids"].max() == 1
            assert dm.test_data.labels.tolist() == [-1]
        else:
            text = dm.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
            assert text == 'great, " really " great'


def test_jsonl_numbers_are_label_names_as_csv_cells_are(tmp_path, token_cache):
    """Star ratings 1-3 named ["1", "2", "3"]: JSON's 1 is the class "1", as a CSV cell "1"
    is (was: position 1, the class "2", shifting every class silently; 3 was refused)."""
    d = tmp_path / "stars"
    d.mkdir()
    rows = [("awful", 1), ("fine", 2), ("superb", 3.0)]
    for split in ("train", "dev"):
        (d / f"{split}.jsonl").write_text(
            "".join(json.dumps({"sentence": t, "stars": s}) + "\n" for t, s in rows)
        )
    dm = make_dm(
        d,
        token_cache,
        source="jsonl",
        train_split="train.jsonl",
        val_split="dev.jsonl",
        label_column="stars",
        label_names=["1", "2", "3"],
    )
    dm.setup("fit")
    assert dm.train_data.labels.tolist() == [0, 1, 2]


def test_a_number_that_is_not_one_of_numbered_class_names_is_refused(
    tmp_path, token_cache, monkeypatch
):
    """Ratings named ["1", "3", "5"]: a `2` was read as position 2, the class "5", and 0-based
    labels shifted onto the names, silently. Numbered names take names only; a Hugging Face
    ClassLabel column still holds positions."""
    d = tmp_path / "stars"
    d.mkdir()
    (d / "train.tsv").write_text("sentence\tlabel\nawful\t1\nfine\t3.0\nsuperb\t5\n")
    (d / "dev.tsv").write_text("sentence\tlabel\nmeh\t2\n")
    dm = make_dm(d, token_cache, label_names=["1", "3", "5"])
    with pytest.raises(
        SFTError,
        match=r"dev\.tsv, line 2: label '2' is not in the label set \(\['1', '3', '5'\]\); with "
        "class names that are numbers, labels are read as names",
    ):
        dm.setup("fit")
    (d / "dev.tsv").write_text("sentence\tlabel\nmeh\t3\n")
    dm = make_dm(d, token_cache, label_names=["1", "3", "5"])
    dm.setup("fit")
    assert dm.train_data.labels.tolist() == [0, 1, 2] and dm.val_data.labels.tolist() == [1]
    import datasets

    import sft.data.readers.hf as hf_reader

    stars = datasets.ClassLabel(names=["1", "3", "5"])
    features = datasets.Features({"sentence": datasets.Value("string"), "label": stars})
    rows = {"sentence": ["awful", "fine", "superb"], "label": [0, 1, 2]}
    monkeypatch.setattr(
        hf_reader,
        "load_hf_split",
        lambda *args: datasets.Dataset.from_dict(rows, features=features),
    )
    splits = {"train_split": "train", "val_split": "validation", "test_split": None}
    dm = make_dm(tmp_path, token_cache, source="hf", dataset_name="someone/stars", **splits)
    dm.setup("fit")
    assert dm.class_names == ["1", "3", "5"] and dm.train_data.labels.tolist() == [0, 1, 2]


@pytest.mark.parametrize("source", ["tsv", "csv"])
def test_a_text_longer_than_the_csv_modules_field_limit_is_read(tmp_path, token_cache, source):
    """A 150,000-character document in a TSV/CSV cell was refused as a malformed row (Python's
    csv limits a field to 131,072 characters); as .jsonl or .txt it was read. It is read and
    truncated to max_length like any text."""
    sep = "\t" if source == "tsv" else ","
    long_text = "word " * 30_000
    for split in ("train", "dev"):
        (tmp_path / f"{split}.{source}").write_text(
            f"sentence{sep}label\n{long_text}{sep}1\nshort{sep}0\n"
        )
    files = {"train_split": f"train.{source}", "val_split": f"dev.{source}", "test_split": None}
    dm = make_dm(tmp_path, token_cache, source=source, max_length=32, **files)
    dm.setup("fit")
    assert dm.train_data.labels.tolist() == [1, 0]
    assert csv.field_size_limit() == 131_072  # the process's limit is left as it was


def test_jsonl_true_false_labels_are_the_names_true_and_false(tmp_path, token_cache):
    """JSON booleans were refused whatever data.label_names said ("label False is not in the
    label set (['false', 'true'] or 0..1)")."""
    d = tmp_path / "bool"
    d.mkdir()
    rows = [("good", True), ("bad", False), ("fine", True)]
    for split in ("train", "dev"):
        (d / f"{split}.jsonl").write_text(
            "".join(json.dumps({"sentence": t, "label": y}) + "\n" for t, y in rows)
        )
    files = {"source": "jsonl", "train_split": "train.jsonl", "val_split": "dev.jsonl"}
    dm = make_dm(d, token_cache, **files, label_names=["false", "true"])
    dm.setup("fit")
    assert dm.train_data.labels.tolist() == [1, 0, 1]
    _error(make_dm(d, token_cache, **files), r"label 'true' is not in the label set")


def test_a_json_array_of_records_is_read(tmp_path, token_cache):
    """A JSON array of records (json.dump of a list, sft-predict's format=json), pretty-printed
    or on one line: was refused as not JSON Lines. Its records are counted in errors."""
    d = tmp_path / "array"
    d.mkdir()
    records = [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}]
    for name, text in (("pretty", json.dumps(records, indent=1)), ("one", json.dumps(records))):
        (d / f"{name}.jsonl").write_text(text + "\n")
        files = {"train_split": f"{name}.jsonl", "val_split": f"{name}.jsonl"}
        dm = make_dm(d, token_cache, source="jsonl", **files)
        dm.setup("fit")
        assert dm.train_data.labels.tolist() == [1, 0]
    (d / "bad.jsonl").write_text(json.dumps([*records, {"text": "x", "label": 1}]))
    dm = make_dm(d, token_cache, source="jsonl", train_split="bad.jsonl")
    _error(dm, r"bad\.jsonl, record 3: .*'sentence'")


def test_jsonl_blank_lines_are_said_and_a_key_written_twice_is_an_error(
    tmp_path, token_cache, caplog
):
    """Blank lines between the records were left out without a word (TSV/CSV warn), and a key
    written twice in a record kept its last value silently."""
    d = tmp_path / "d"
    d.mkdir()
    lines = ['{"sentence": "good", "label": 1}', "", '{"sentence": "bad", "label": 0}', ""]
    (d / "train.jsonl").write_text("\n".join(lines) + "\n")
    files = {"source": "jsonl", "train_split": "train.jsonl", "val_split": "train.jsonl"}
    with logs_warning(caplog, r"1 blank line left out \(line 2\)"):
        make_dm(d, token_cache, **files).setup("fit")
    (d / "train.jsonl").write_text('{"sentence": "good", "sentence": "other", "label": 1}\n')
    _error(
        make_dm(d, token_cache, **files),
        r"train\.jsonl, line 1: the key 'sentence' is written twice in one record",
    )


def test_a_jsonl_test_file_is_unlabelled_only_when_no_record_has_a_label(tmp_path, token_cache):
    """A test file whose first record lacks the label: was read as unlabelled, dropping the
    labels of every other record without a word; now one error naming that line."""
    d = tmp_path / "d"
    d.mkdir()
    record = {"sentence": "fine", "label": 1}
    for split in ("train", "dev"):
        (d / f"{split}.jsonl").write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    (d / "test.jsonl").write_text(
        json.dumps({"sentence": "no label yet"}) + "\n" + json.dumps(record)
    )
    files = {"train_split": "train.jsonl", "val_split": "dev.jsonl", "test_split": "test.jsonl"}
    dm = make_dm(d, token_cache, source="jsonl", **files)
    with pytest.raises(SFTError, match=r"test\.jsonl, line 1: .*'label'"):
        dm.setup("test")


@pytest.mark.parametrize("val_split", [None, ""])
def test_text_data_without_a_validation_split_says_why_it_needs_one(
    tmp_path, token_cache, val_split
):
    """data.val_split=null: "expected a string, got None" (the config's comment says why it
    is required: nothing is carved out of training)."""
    shown = "null" if val_split is None else ""
    with pytest.raises(
        SFTError,
        match=rf"^data\.val_split={shown}: text data validates on a split of its own \(none is "
        r"carved out of training\); name it, data\.val_split=<file or split>, or split the "
        r"training file yourself$",
    ):
        make_dm(tmp_path, token_cache, val_split=val_split)
    check_config_types(  # the type check before it lets None through to this line
        {
            "_target_": "sft.data.text.TextClassificationDataModule",
            "data_dir": ".",
            "val_split": None,
        },
        "data",
    )


@pytest.mark.parametrize("source", ["tsv", "jsonl"])
def test_a_test_split_labelled_minus_one_is_unlabelled(tmp_path, token_cache, source):
    """GLUE's test files and `datasets`' exports of them (`to_json`, `to_csv`) label every row
    -1: the split is unlabelled, as the hf reader has it (was: `label '-1' is not in the label
    set`); required labels still refuse -1."""
    d = tmp_path / source
    d.mkdir()
    rows = {"train": [("good", 1), ("bad", 0)], "dev": [("fine", 1), ("poor", 0)]}
    rows["test"] = [("nice", -1), ("awful", -1)]
    for split, pairs in rows.items():
        if source == "tsv":
            body = "".join(f"{t}\t{y}\n" for t, y in pairs)
            (d / f"{split}.tsv").write_text("sentence\tlabel\n" + body)
        else:
            body = "".join(
                json.dumps({"idx": i, "sentence": t, "label": y}) + "\n"
                for i, (t, y) in enumerate(pairs)
            )
            (d / f"{split}.jsonl").write_text(body)
    files = {
        f"{k}_split": f"{k if k != 'val' else 'dev'}.{source}" for k in ("train", "val", "test")
    }
    dm = make_dm(d, token_cache, source=source, batch_size=2, label_names=["neg", "pos"], **files)
    # known before the split is read, as sft-train decides to test after fit (was: a labelled
    # test split until read, so testing failed after training)
    assert not dm.has_labelled_test
    dm.setup()
    assert dm.test_data.labels.tolist() == [-1, -1]
    assert not dm.has_labelled_test
    required = make_dm(d, token_cache, source=source, test_labelled=True, **files)
    # sft-eval's named test file: says why -1 is refused there (was: only "not in the label
    # set", though the config calls -1 unlabelled)
    with pytest.raises(
        SFTError,
        match=rf"test\.{source}, line [12]: label '?-1'? is not in the label set \(integers >= "
        r"0\); a negative label \(GLUE's test files' -1\) marks an example without one, but this "
        r"split is scored, so each example needs one: sft-predict predicts unlabelled texts; if "
        r"-1 is a class \(labels such as -1/1\), name the classes, in the model's output order: "
        r"'data\.label_names=\[\"-1\",\.\.\.\]'$",
    ):
        required.setup()
    # -1 as a class name is a label
    named = make_dm(d, token_cache, source=source, label_names=["-1", "0", "1"], **files)
    assert named.has_labelled_test
    named.setup()
    assert named.test_data.labels.tolist() == [0, 0] and named.has_labelled_test


def test_a_test_file_whose_label_column_is_left_empty_is_unlabelled(tmp_path, token_cache):
    """A test file with its label column blank, as Kaggle's have: "line 2: the label is
    missing", though a column of -1s or no label column is an unlabelled test split."""
    _tiny_tsv(tmp_path, [("good", "pos"), ("bad", "neg")])
    (tmp_path / "test.tsv").write_text("sentence\tlabel\ngreat film\t\ndull film\t \n")
    dm = make_dm(tmp_path, token_cache, label_names=["neg", "pos"], test_split="test.tsv")
    assert not dm.has_labelled_test
    dm.setup()
    assert dm.test_data.labels.tolist() == [-1, -1]
    (tmp_path / "test.tsv").write_text("sentence\tlabel\ngreat film\tpos\ndull film\t\n")
    with pytest.raises(SFTError, match=r"test\.tsv, line 3: no label \(-1 or empty\) while"):
        make_dm(tmp_path, token_cache, label_names=["neg", "pos"], test_split="test.tsv").setup()


def test_a_test_split_with_some_rows_labelled_minus_one_is_refused(tmp_path, token_cache):
    """Some test rows -1, the others labelled: the split counted as labelled and the -1 rows
    reached the loss after training (IndexError: Target -1 is out of bounds); and a scored
    batch holding -1 from any datamodule is refused too (-1 passed the batch check)."""
    rows = {"train": "good\t1\nbad\t0\n", "dev": "fine\t1\npoor\t0\n"}
    rows["test"] = "nice\t1\nawful\t-1\n"
    for split, body in rows.items():
        (tmp_path / f"{split}.tsv").write_text("sentence\tlabel\n" + body)
    dm = make_dm(tmp_path, token_cache, batch_size=2, test_split="test.tsv")
    with pytest.raises(SFTError) as error:
        dm.setup("fit")  # before training (it failed after)
    assert str(error.value) == (
        f"{tmp_path / 'test.tsv'}, line 3: no label (-1 or empty) while other rows have labels: label "
        "every row to score the file, or none (all -1 or empty, or no label column) to predict it only"
    )
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "labels": torch.tensor([1, -1])}
    dm = make_dm(tmp_path, token_cache, batch_size=2)
    dm.num_classes = 2
    dm.trainer = SimpleNamespace(predicting=False)
    with pytest.raises(SFTError, match=r"gives labels -1\.\.1 for 2 classes: labels are class "):
        dm.on_before_batch_transfer(batch, 0)
    dm.trainer = SimpleNamespace(predicting=True)  # unlabelled rows are predicted
    assert dm.on_before_batch_transfer(batch, 0) is batch


def test_a_named_class_without_training_examples_is_named(tmp_path, token_cache, caplog):
    """data.label_names with a class the training file never uses: a model output that never
    learns (was: without a word)."""
    _tiny_tsv(tmp_path / "d", [("good", "positive"), ("bad", "negative")])
    dm = make_dm(tmp_path / "d", token_cache, label_names=NAMES, batch_size=2)
    with logs_warning(caplog, r"no training examples of 1 of the 3 classes \(neutral\)"):
        dm.setup("fit")


def test_integer_labels_without_names(tmp_path, token_cache, caplog):
    _tiny_tsv(tmp_path / "d", [("x", "0"), ("y", "2"), ("z", "1")])
    dm = make_dm(tmp_path / "d", token_cache, batch_size=2)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert (dm.num_classes, dm.class_names) == (3, ["0", "1", "2"])
    assert not logged_warnings(caplog)
    # labels counted from 1: how to name them (was: only "no examples of class 0", then the
    # class-count error asking for a third class)
    _tiny_tsv(tmp_path / "one", [("x", "1"), ("y", "2"), ("z", "1")])
    with logs_warning(
        caplog,
        r"one/train\.tsv: the integer labels start at 1, and labels are class indices from 0; "
        r"if they are not, name the classes instead: 'data\.label_names=\[\"1\",\"2\"\]'$",
    ):
        one = make_dm(tmp_path / "one", token_cache, batch_size=2)
        one.setup("fit")
        one.setup("test")  # sft-train's test after fit: said once
    assert sum("integer labels start at" in m for m in logged_warnings(caplog)) == 1
    # the model's class-count error offers those names first (was: only "set
    # model.num_classes=3", which trains a class 0 of no examples)
    model = SFTClassifier(
        backbone={"_target_": "sft.models.backbones.create_backbone", "name": "small_cnn"},
        num_classes=2,
        head={"_target_": "sft.models.heads.FusedHead"},
    )
    model._trainer = SimpleNamespace(datamodule=one)
    with pytest.raises(
        SFTError,
        match=r"the data has 3 classes \(TextClassificationDataModule\); the integer labels start "
        r"at 1: if they are not class indices, name the classes, 'data\.label_names=\[\"1\",\"2\"\]' "
        r"\(2 classes\); or set model\.num_classes=3$",
    ):
        model.setup("fit")
    # star ratings 1, 3, 5: the names of the labels present (was: ["1", ..., "5"], classes 2
    # and 4 of no examples)
    _tiny_tsv(tmp_path / "stars", [("x", "1"), ("y", "5"), ("z", "3")])
    with logs_warning(
        caplog, r"""name the classes instead: 'data\.label_names=\["1","3","5"\]'$"""
    ):
        make_dm(tmp_path / "stars", token_cache, batch_size=2).setup("fit")


def test_one_integer_label_far_beyond_the_others_is_named(tmp_path, token_cache, caplog):
    """A mistyped label (10000000 among 0s and 1s) made ten million classes: 2.4 GB of class
    names, warnings of 89 MB, then the advice to set model.num_classes=10000001. A subset of a
    dataset's classes (labels 0, 5, 999) still reads as integers, its empty classes named by a
    few."""
    _tiny_tsv(tmp_path / "d", [("x", "0"), ("y", "1"), ("typo", "10000000"), ("z", "1")])
    _error(
        make_dm(tmp_path / "d", token_cache, batch_size=2),
        r"d/train\.tsv, line 4: label 10000000 would make 10,000,001 classes, only 3 of them with "
        r"examples: integer labels are class indices",
    )
    _tiny_tsv(tmp_path / "s", [("x", "0"), ("y", "5"), ("z", "999")])
    dm = make_dm(tmp_path / "s", token_cache, batch_size=2)
    with logs_warning(caplog, r"no training examples of 997 of the 1000 classes \(1, 2, 3, "):
        dm.setup("fit")
    assert dm.num_classes == 1000
    assert max(len(m) for m in logged_warnings(caplog)) < 400


def test_a_validation_or_test_file_without_some_classes_is_named(tmp_path, token_cache, caplog):
    """A dev file of one class scores the model on it alone (was: without a word); an
    unlabelled test file, and files with every class, are silent."""
    d = tmp_path / "d"
    _tiny_tsv(d, [("good", "positive"), ("bad", "negative"), ("fine", "positive")])
    (d / "dev.tsv").write_text("sentence\tlabel\nfine\tpositive\ngreat\tpositive\n")
    (d / "test.tsv").write_text("sentence\tlabel\nawful\tnegative\n")
    names = ["negative", "positive", "mixed"]
    dm = make_dm(d, token_cache, batch_size=2, label_names=names, test_split="test.tsv")
    with caplog.at_level(logging.WARNING):
        dm.setup()
    warned = logged_warnings(caplog)
    assert [m.replace(str(d), "<d>") for m in warned] == [
        "<d>/train.tsv: no training examples of 1 of the 3 classes (mixed); the model cannot "
        "learn to predict them",
        "<d>/dev.tsv: no validation examples of 2 of the 3 classes (negative, mixed); its scores "
        "say nothing about them",
        "<d>/test.tsv: no test examples of 2 of the 3 classes (positive, mixed); its scores say "
        "nothing about them",
    ]
    caplog.clear()
    (d / "test.tsv").write_text("sentence\nawful\n")
    (d / "dev.tsv").write_text("sentence\tlabel\nfine\tpositive\nugly\tnegative\n")
    dm = make_dm(d, token_cache, batch_size=2, label_names=names[:2], test_split="test.tsv")
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_rows_read_into_one_quoted_field_are_named(tmp_path, token_cache, caplog):
    """A CSV quote that is not closed until a later row's quote swallows the rows between into
    one text (was: 8 rows read as 4 examples, without a word); one never closed names the line
    where it opens (was: the last line of the file)."""
    d = tmp_path / "q"
    d.mkdir()
    rows = ["good,pos", '"Oops forgot to close,neg', "nice,pos", "ugly,neg", "bad,neg"]
    rows += ['my tv is 17",pos', "fine,pos", "awful,neg"]
    (d / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    # a text over two lines, the second with a comma but no label after it: read as it is,
    # silently
    (d / "dev.csv").write_text('text,label\n"Great film,\nthe ending weak, sadly",pos\nfine,neg\n')
    files = {"train_split": "train.csv", "val_split": "dev.csv", "text_column": "text"}
    files.update(source="csv", label_names=["neg", "pos"], batch_size=2)
    merged = (
        rf"^{d}/train\.csv, lines 3-7: one quoted field spans 5 lines that look like rows of "
        r"this file: if a quote \(\"\) is not closed there, those rows were read as one text; "
        r"check the quotes, or set data\.quoting=none"
    )
    dm = make_dm(d, token_cache, **files)
    with logs_warning(caplog, merged):
        dm.setup("fit")
    assert dm.train_data.split.lines.tolist() == [2, 3, 8, 9]  # a record by its first line
    assert len(logged_warnings(caplog)) == 1  # dev.csv's two-line text is not named
    caplog.clear()
    dm = make_dm(d, token_cache, **files)
    with logs_warning(caplog, merged):  # again when the tokens come from the cache (was: not)
        dm.setup("fit")
    assert dm.cache_hits["train"]
    assert dm.val_data.split.lines.tolist() == [2, 4]
    (d / "train.csv").write_text('text,label\ngood,pos\n"never closed,neg\nnice,pos\n')
    _error(
        make_dm(d, token_cache, **files),
        r"train\.csv, line 3: a quoted field that starts here is never closed",
    )
    (d / "train.csv").write_text('text,"label\n')  # in the header (was: a crash)
    _error(
        make_dm(d, token_cache, **files),
        r"train\.csv, line 1: a quoted field that starts here is never closed",
    )


def test_a_tsv_written_with_csv_quoting_is_named(tmp_path, token_cache, caplog):
    """pandas' `to_csv(sep="\t")` quotes a text holding quotes and doubles them: read with TSV's
    quoting none, the quotes stayed in the text without a word; a tab inside such a field moved
    the columns and the label error said nothing of quotes."""
    d = tmp_path / "pandas"
    d.mkdir()
    body = 'sentence\tlabel\n"He said ""wow"", loved it"\t1\nplain words\t0\n'
    (d / "train.tsv").write_text(body)
    (d / "dev.tsv").write_text('sentence\tlabel\nfine\t1\nmy "quoted" word\t0\n')
    dm = make_dm(d, token_cache, batch_size=2)
    with logs_warning(
        caplog,
        r"train\.tsv, the texts of 1 rows look written with CSV quoting, in quotes with their own quotes "
        r"doubled .*\(lines 2\): they are read as written, quotes included; "
        r"data\.quoting=minimal reads them",
    ):
        dm.setup("fit")
    assert len(logged_warnings(caplog)) == 1  # dev.tsv's quotes inside a text are not named
    minimal = make_dm(d, token_cache, batch_size=2, quoting="minimal")
    minimal.setup("fit")
    assert len(minimal.train_data) == 2
    (d / "train.tsv").write_text('sentence\tlabel\n"great\tmovie\nreally"\t1\nplain\t0\n')
    _error(
        make_dm(d, token_cache, label_names=["neg", "pos"]),
        r"train\.tsv, line 2: label 'movie' is not in the label set .*; does a field in "
        r"quotes hold a tab\? data\.quoting=minimal reads quoted fields$",
    )


# ---- errors: one line, naming file and line ---------------------------------------------------
def _error(dm: TextClassificationDataModule, match: str) -> str:
    with pytest.raises(SFTError, match=match) as info:
        dm.setup("fit")
    assert "\n" not in str(info.value)
    return str(info.value)


def test_malformed_rows_name_file_and_line(tmp_path, token_cache):
    d = tmp_path / "bad"
    _tiny_tsv(d, [("ok", "1"), ("ok too", "0")])
    (d / "train.tsv").write_text("sentence\tlabel\nfine\t1\ntoo\tmany\tfields\n")
    _error(make_dm(d, token_cache), r"bad/train\.tsv, line 3: expected 2 tab-separated fields")
    # a quoted field with a tab in a GLUE-style (unquoted) TSV: how to read quotes (was: no hint)
    (d / "train.tsv").write_text('sentence\tlabel\nfine\t1\n"a\tb"\t0\n')
    _error(
        make_dm(d, token_cache),
        r"line 3: expected 2 tab-separated fields \(sentence, label\), got 3; a field in quotes "
        r"holds a tab\? data\.quoting=minimal reads quoted fields$",
    )
    # a stray carriage return ends a line where it stands (was: the field count alone, of a
    # row that looks whole where no \r is shown)
    (d / "train.tsv").write_bytes(b"sentence\tlabel\nfine\t1\ngood movie\rreally\t1\n")
    _error(
        make_dm(d, token_cache),
        r"line 3: expected 2 tab-separated fields \(sentence, label\), got 1; the file holds a "
        r"carriage return \(\\r\) that no newline follows",
    )
    # one inside a quoted field is the text's own: not named for another row's mistake
    (d / "train.tsv").write_bytes(b'sentence\tlabel\n"fine\rok"\t1\ntoo\tmany\tfields\n')
    message = _error(make_dm(d, token_cache, quoting="minimal"), r"line 4: expected 2 tab")
    assert "carriage return" not in message
    # one column as two things (was: the same text paired with itself, read silently; the
    # texts taken as labels, "label 'fine' is not in the label set")
    for key, holds in (("text_pair_column", "second texts"), ("label_column", "labels")):
        with pytest.raises(SFTError) as info:
            make_dm(d, token_cache, **{key: "sentence"})
        assert str(info.value) == (
            f"data.{key}=sentence is also data.text_column: one column cannot be both; give "
            f"data.{key} the column that holds the {holds}"
        )
    # a semicolon-separated "CSV" (was: only the columns it has)
    (d / "semi.csv").write_text("sentence;label\nfine;1\n")
    _error(
        make_dm(d, token_cache, source="csv", train_split="semi.csv"),
        r"semi\.csv: no column .*\(the file looks separated by ';': save it with commas \(CSV\)",
    )
    # JSON lines whose texts hold semicolons: still JSON lines
    (d / "semi.csv").write_text('{"sentence": "great; fun", "label": 1}\n')
    _error(
        make_dm(d, token_cache, source="csv", train_split="semi.csv"),
        r"semi\.csv: no column .*\(the file looks like jsonl: set data\.source=jsonl\)",
    )

    (d / "train.jsonl").write_text('{"sentence": "a", "label": 1}\n{"sentence": "b", "label": \n')
    _error(
        make_dm(d, token_cache, source="jsonl", train_split="train.jsonl"),
        r"bad/train\.jsonl, line 2: not valid JSON",
    )
    (d / "train.txt").write_text("(3 (2 fine) (3 film))\n(4 (2 broken) (3 tree)\n")
    (d / "dev.txt").write_text("(3 (2 fine) (3 film))\n")
    trees = {"source": "sst_trees", "train_split": "train.txt", "val_split": "dev.txt"}
    _error(make_dm(d, token_cache, **trees), r"bad/train\.txt, line 2: not a PTB sentiment tree")
    (d / "train.txt").write_text("(2 (2 neutral) (2 only))\n")
    _error(
        make_dm(d, token_cache, binary=True, **trees),
        r"train\.txt: the train split has no examples",
    )


def test_label_outside_the_set(tmp_path, token_cache):
    d = tmp_path / "labels"
    _tiny_tsv(d, [("good", "positive"), ("bad", "negative")])
    (d / "dev.tsv").write_text("sentence\tlabel\nfine\tpositive\nodd\tmixed\n")
    msg = _error(
        make_dm(d, token_cache, label_names=["negative", "positive"]),
        r"labels/dev\.tsv, line 3: label 'mixed' is not in the label set",
    )
    assert "['negative', 'positive']" in msg
    # integer labels: the set comes from the training split
    _tiny_tsv(d, [("good", "1"), ("bad", "0")])
    (d / "dev.tsv").write_text("sentence\tlabel\nfine\t1\nodd\t2\n")
    _error(
        make_dm(d, token_cache),
        r"labels/dev\.tsv, line 3: label 2 is not in the label set \(0\.\.1",
    )
    # text labels without names: how to name them (was: only "integers >= 0")
    _tiny_tsv(d, [("good", "pos"), ("bad", "neg")])
    _error(
        make_dm(d, token_cache),
        r"train\.tsv, line 2: label 'pos' .* text labels need the class names, in the model's "
        r"output order: data\.label_names=\[\.\.\.\]$",
    )
    # whole numbers as spreadsheets write them are indices, as JSON's 1.0 is (was: refused,
    # with the hint for text labels)
    _tiny_tsv(d, [("good", "1.0"), ("bad", "0.0")])
    dm = make_dm(d, token_cache)
    dm.setup("fit")
    assert dm.train_data.labels.tolist() == [1, 0]
    _tiny_tsv(d, [("good", "1"), ("bad", "0.5")])
    _error(make_dm(d, token_cache), r"line 3: label '0\.5' .* class indices are whole numbers$")
    # an index no classifier has (was: an OverflowError traceback from the label tensor)
    _tiny_tsv(d, [("good", "1"), ("bad", "100000000000000000000")])
    _error(make_dm(d, token_cache), r"line 3: label '100000000000000000000' is too large for a")
    # an empty cell, a JSON null: missing (was: "label ''" with the hint for text labels)
    _tiny_tsv(d, [("good", "1"), ("bad", "")])
    _error(make_dm(d, token_cache), r"line 3: the label is missing \(expected integers >= 0\)$")
    for split in ("train", "dev"):
        (d / f"{split}.jsonl").write_text(
            '{"sentence": "a", "label": 1}\n{"sentence": "b", "label": null}\n'
        )
    jsonl = {"source": "jsonl", "train_split": "train.jsonl", "val_split": "dev.jsonl"}
    _error(make_dm(d, token_cache, **jsonl), r"line 2: the label is missing")
    # a list (was: "not in the label set", with the hint for text labels)
    (d / "train.jsonl").write_text('{"sentence": "a", "label": [0]}\n')
    _error(
        make_dm(d, token_cache, **jsonl),
        r"train\.jsonl, line 1: label \[0\] is a list: expected one label, a class index or name "
        r"\(integers >= 0\)$",
    )
    # names differ in case only (was: refused without a word of the name meant)
    _tiny_tsv(d, [("good", "Positive"), ("bad", "negative")])
    _error(
        make_dm(d, token_cache, label_names=["negative", "positive"]),
        r"line 2: label 'Positive' is not in the label set .*; did you mean 'positive'\? \(names "
        r"match exactly, case included\)$",
    )


def test_user_mistakes(tmp_path, token_cache):
    d = tmp_path / "cols"
    _tiny_tsv(d, [("good", "1"), ("bad", "0")])
    _error(
        make_dm(d, token_cache, text_column="text"),
        r"no column 'text'; available columns: 'sentence', 'label'",
    )
    # a missing pair column: the hint names its setting (was: only the text and label ones)
    _error(
        make_dm(d, token_cache, text_pair_column="hypothesis"),
        r"no column 'hypothesis'; available columns: 'sentence', 'label' \(set data\.text_column "
        r"/ data\.text_pair_column / data\.label_column\)$",
    )
    # no header row: its first row read as the column names (was: without a word of it)
    (d / "train.tsv").write_text("awful film\t0\ngood\t1\n")
    _error(
        make_dm(d, token_cache),
        r"no column 'sentence', 'label'; available columns: 'awful film', '0' \(.*\); the first "
        r"row looks like data: the file needs a header row naming its columns$",
    )
    # the same with word labels: a class name read as a column's name (was: no note)
    (d / "train.tsv").write_text("awful film\tnegative\ngood\tpositive\n")
    _error(
        make_dm(d, token_cache, label_names=["negative", "positive"]),
        r"available columns: 'awful film', 'negative' \(.*\); the first row looks like data",
    )
    # a header naming the text column twice (was: the first one used without a word)
    (d / "train.tsv").write_text("sentence\tsentence\tlabel\ngood\tbad\t1\n")
    _error(make_dm(d, token_cache), r"train\.tsv: the column 'sentence' appears 2 times")
    _tiny_tsv(d, [("good", "1"), ("bad", "0")])
    # data.data_dir= is the way in every command (was: a `+data.data_dir=` hint of sft-eval,
    # predict and export, in sft-train's line too)
    _error(
        make_dm(tmp_path / "nowhere", token_cache),
        r"nowhere/train\.tsv does not exist \(no folder .*; set data\.data_dir \(sft-train: or "
        r"SFT_DATA_DIR\)\)$",
    )
    # a packaged config's folder, missing where no local copy was linked (make data): where to
    # get it (was: the same line, and no way to the files)
    _error(
        make_dm(tmp_path / "sst2", token_cache),
        r"sst2/train\.tsv does not exist \(no folder .*SFT_DATA_DIR\); if it is to hold the packaged dataset, GLUE SST-2: "
        r"unzip train\.tsv, dev\.tsv and test\.tsv of https://dl\.fbaipublicfiles\.com/glue/data/"
        r"SST-2\.zip there, or read the Hugging Face dataset with data=hf_dataset \(stanfordnlp/sst2\)\)$",
    )
    _error(make_dm(d, token_cache, val_split="val.tsv"), r"cols/val\.tsv is missing .*dev\.tsv")
    with pytest.raises(SFTError, match="max_length must be a positive integer, got 0"):
        make_dm(d, token_cache, max_length=0)
    # [CLS] + [SEP] fill it: every text trained as an empty one, with a warning saying the
    # texts were empty (was: accepted); 1 says the same (was: ">= 2", and then 2 was refused)
    for length in (1, 2):
        _error(
            make_dm(d, token_cache, max_length=length),
            rf"data\.max_length={length} leaves no room for text: tokenizer .* adds 2 special "
            r"tokens; give at least 3",
        )
    with pytest.raises(SFTError, match=r"data\.source must be one of"):
        make_dm(d, token_cache, source="xml")


@pytest.mark.parametrize(
    ("source", "train", "header", "row"),
    [
        ("tsv", "train.tsv", "sentence\tlabel\n", "{text}\t1\n"),
        ("csv", "train.csv", "sentence,label\n", "{text},1\n"),
        ("jsonl", "train.jsonl", "", '{{"sentence": "{text}", "label": 1}}\n'),
    ],
)
def test_a_file_that_is_not_utf8_names_its_first_bad_line(
    source, train, header, row, tmp_path, token_cache
):
    """A Latin-1 'café' on line 10 (was, for CSV: `line 1: unreadable header`: the decoder had
    read ahead; TSV and JSONL named no line)."""
    d = tmp_path / source
    d.mkdir()
    rows = [row.format(text=f"film {i}") for i in range(8)] + [row.format(text="café")]
    (d / train).write_bytes((header + "".join(rows)).encode("latin-1"))
    (d / train.replace("train", "dev")).write_text(header + row.format(text="fine"))
    line = 9 + bool(header)
    _error(
        make_dm(
            d,
            token_cache,
            source=source,
            train_split=train,
            val_split=train.replace("train", "dev"),
        ),
        rf"{train}, line {line}: not UTF-8 text \(invalid continuation byte at byte .*save the "
        "file as UTF-8",
    )
    # what Windows' editors save as "Unicode" (was: "invalid start byte ... b'\xff\xfe'")
    (d / train).write_text(header + "".join(rows), encoding="utf-16")
    _error(
        make_dm(d, token_cache, source=source, train_split=train, val_split=train),
        rf"{train} is UTF-16 text \(it starts with a UTF-16 byte-order mark\): save it as UTF-8",
    )


def test_empty_texts_warn_with_lines_or_fail(tmp_path, token_cache, caplog):
    """Empty or whitespace-only texts: a warning naming the count and lines (also from the
    token cache), or one error line with allow_empty_text=false."""
    d = tmp_path / "empty"
    _tiny_tsv(d, [("good", "1"), ("", "0"), ("bad", "0"), ("   ", "1")])
    for _ in range(2):  # tokenised, then from the cache
        with logs_warning(caplog, r"empty/train\.tsv: 2 of 4 train examples .*lines 3, 5"):
            make_dm(d, token_cache).setup("fit")
    msg = _error(make_dm(d, token_cache, allow_empty_text=False), r"empty or whitespace-only")
    assert "lines 3, 5" in msg and "allow_empty_text=true" in msg


def test_sentence_pairs_with_one_empty_side_warn_or_fail(tmp_path, token_cache, caplog):
    """A pair with one side empty was never named, not even with allow_empty_text=false: only
    pairs with both sides empty had no tokens beyond the special ones. An unknown word
    ([UNK]) is a word."""
    d = tmp_path / "pairs"
    d.mkdir()
    rows = [("a man eats", "he eats"), ("a dog", ""), ("", "a cat"), ("\u2603", "snow")]
    body = "".join(f"{a}\t{b}\t{i % 2}\n" for i, (a, b) in enumerate(rows))
    for split in ("train", "dev"):
        (d / f"{split}.tsv").write_text("premise\thypothesis\tlabel\n" + body)
    pair = {"text_column": "premise", "text_pair_column": "hypothesis"}
    with logs_warning(caplog, r"pairs/train\.tsv: 2 of 4 train examples have an empty or "):
        make_dm(d, token_cache, **pair).setup("fit")
    assert "(or pair text) (lines 3, 4)" in caplog.text
    msg = _error(make_dm(d, token_cache, allow_empty_text=False, **pair), r"empty or whitespace")
    assert "lines 3, 4" in msg


def test_a_pair_needs_a_separator_and_room_for_both_texts(tmp_path, token_cache, caplog):
    """A tokenizer without a pair template joined the two texts with nothing between them
    (`...park.A man is...`), without a word; data.max_length at the specials + 1 that single
    texts need cut every pair's second text away, and the warning blamed the data."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    d = tmp_path / "pairs"
    d.mkdir()
    body = "".join(f"a man reads {i}\tthe man sleeps\t{i % 2}\n" for i in range(4))
    for split in ("train", "dev"):
        (d / f"{split}.tsv").write_text("premise\thypothesis\tlabel\n" + body)
    pair = {"text_column": "premise", "text_pair_column": "hypothesis"}
    _error(
        make_dm(d, token_cache, max_length=4, **pair),
        r"data\.max_length=4 leaves no room for both texts of a pair: tokenizer 'minilm' adds 3 "
        r"special tokens; give at least 5$",
    )
    cut = r"pairs/train\.tsv, 4 of 4 pairs are longer than data\.max_length=5 tokens together and"
    with logs_warning(caplog, cut + r" are cut to it, the longer text first"):
        make_dm(d, token_cache, max_length=5, **pair).setup("fit")  # a token of each text: kept
    joined = tmp_path / "joined"  # a generic tokenizer of MiniLM's vocabulary, no template
    backend = AutoTokenizer.from_pretrained(resolve_model_name("minilm")).backend_tokenizer
    backend.post_processor = None
    specials = {f"{k}_token": f"[{k.upper()}]" for k in ("unk", "pad", "cls", "sep", "mask")}
    PreTrainedTokenizerFast(tokenizer_object=backend, **specials).save_pretrained(joined)
    TextClassificationDataModule(
        str(d), tokenizer=str(joined), cache_dir=str(token_cache), text_column="premise"
    ).setup("fit")  # single texts are read without specials
    _error(
        TextClassificationDataModule(
            str(d), tokenizer=str(joined), cache_dir=str(token_cache), **pair
        ),
        r"data\.text_pair_column=hypothesis: tokenizer '.*joined' puts nothing between a pair's "
        r"two texts",
    )


def test_texts_a_tokenizer_mostly_cannot_read_are_warned_about(tmp_path, token_cache, caplog):
    """An uncased vocabulary with a tokenizer that keeps case: every capitalised word became
    [UNK], and training ran on them without a sign (val/acc at chance)."""
    from transformers import AutoTokenizer

    rows = [
        ("The cast is wonderful and the story is warm", "1"),
        ("A dull film that goes on far too long", "0"),
        ("One of the best movies of the year", "1"),
        ("It is a tedious mess from start to finish", "0"),
    ]  # sentence case: one word in 9 or 10 (the first) is capitalised
    _tiny_tsv(tmp_path / "cased", rows)
    with caplog.at_level(logging.WARNING):
        make_dm(tmp_path / "cased", token_cache).setup("fit")  # lower-cases: reads them
    assert "unknown token" not in caplog.text
    keeps_case = tmp_path / "keeps_case"
    AutoTokenizer.from_pretrained(
        resolve_model_name("minilm"), do_lower_case=False
    ).save_pretrained(keeps_case)
    dm = TextClassificationDataModule(
        str(tmp_path / "cased"), tokenizer=str(keeps_case), cache_dir=str(token_cache)
    )
    pattern = (
        r"cased/train\.tsv: 11% of the train split's tokens are the tokenizer's unknown token "
        r"'\[UNK\]': tokenizer '.*keeps_case' does not cover these texts; check that it "
        r"lower-cases as its vocabulary needs"
    )
    with logs_warning(caplog, pattern):
        dm.setup("fit")
    again = TextClassificationDataModule(
        str(tmp_path / "cased"), tokenizer=str(keeps_case), cache_dir=str(token_cache)
    )
    with logs_warning(caplog, pattern):
        again.setup("fit")
    assert again.cache_hits["train"]  # checked on the cached tokens too


def test_a_hub_dataset_out_of_reach_fails_at_once(tmp_path, token_cache, monkeypatch, caplog):
    """Offline, `data=hf_dataset` retried the hub for ~25 s (10 lines of `Retrying in 1s ...
    [Retry 1/5]`) before its one-line error; one request decides now, as for hub models. (A
    dataset that does not exist: with network access the error is the hub's answer.)"""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    offline_before = datasets.config.HF_HUB_OFFLINE
    dm = make_dm(
        tmp_path,
        token_cache,
        source="hf",
        dataset_name="sft-tests/no-such-dataset",
        train_split="train",
        val_split="validation",
    )
    with caplog.at_level(logging.WARNING), pytest.raises(SFTError, match=r"could not load Hug"):
        dm.prepare_data()
    assert not [r.getMessage() for r in caplog.records if "Retry" in r.getMessage()]
    assert offline_before == datasets.config.HF_HUB_OFFLINE  # the process's setting is kept


def test_a_file_format_builder_as_dataset_name_points_to_text_files(tmp_path, token_cache):
    """`data=hf_dataset data.dataset_name=csv`: datasets' csv builder, handed no files, read
    every file under the current folder (a PNG there: a decode error blamed on the offline
    cache; CSVs there: trained on whatever they were)."""
    with pytest.raises(SFTError) as info:
        make_dm(tmp_path, token_cache, source="hf", dataset_name="csv", train_split="train")
    assert str(info.value).startswith("data.dataset_name=csv is datasets' reader of csv files")
    assert "data=text_files" in str(info.value)


def test_a_split_with_the_training_examples_is_warned_about(tmp_path, token_cache, caplog):
    """`data.val_split=train.tsv` (or a copy of it): validation scored the examples trained on
    without a word (image folders warn of their linked files)."""
    rows = [("good", "1"), ("bad", "0"), ("fine", "1"), ("awful", "0")]
    _tiny_tsv(tmp_path, rows)
    (tmp_path / "copy.tsv").write_bytes((tmp_path / "train.tsv").read_bytes())
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nnice\t1\npoor\t0\n")
    with caplog.at_level(logging.WARNING):
        make_dm(tmp_path, token_cache, batch_size=2).setup("fit")
    assert "training split's examples" not in caplog.text  # dev.tsv is another file
    dm = make_dm(tmp_path, token_cache, batch_size=2, val_split="train.tsv", test_split="copy.tsv")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    for split, name in (("train.tsv", "validation"), ("copy.tsv", "test")):
        assert (
            f"{tmp_path / split}: the {name} split holds the training split's examples "
            f"({tmp_path / 'train.tsv'}): {name} scores examples the model trains on"
        ) in caplog.text
    assert "holds the validation split's" not in caplog.text  # said of the training split
    # the test split that validation chooses the best checkpoint on (was: not a word)
    dm = make_dm(tmp_path, token_cache, batch_size=2, val_split="dev.tsv", test_split="dev.tsv")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert (
        f"{tmp_path / 'dev.tsv'}: the test split holds the validation split's examples "
        f"({tmp_path / 'dev.tsv'}): testing scores the examples the best checkpoint is chosen on"
    ) in caplog.text


def test_a_batch_larger_than_a_ddp_process_share_is_an_error(tmp_path, token_cache):
    """Under DDP each process trains on its share of the split: 4 examples over 2 processes
    with batch_size=3 and drop_last trained no step, and the run was recorded as completed."""
    _tiny_tsv(tmp_path, [("good", "1"), ("bad", "0"), ("fine", "1"), ("awful", "0")])
    dm = make_dm(tmp_path, token_cache, batch_size=3, drop_last=True)
    dm.setup("fit")  # one process: 4 >= 3
    dm = make_dm(tmp_path, token_cache, batch_size=3, drop_last=True)
    dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": 0})
    with pytest.raises(SFTError) as info:
        dm.setup("fit")
    assert (
        f"data.batch_size=3 is larger than the training subset of {tmp_path / 'train.tsv'} (4 "
        "samples, 2 per process over 2 DDP processes) and data.drop_last=true"
    ) in str(info.value)


def test_hf_dataset_offline_is_one_clear_error(tmp_path, token_cache, monkeypatch):
    import datasets
    import huggingface_hub

    # as with HF_DATASETS_OFFLINE=1 (read at import time): fail at once instead of retrying
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    dm = make_dm(
        tmp_path,
        token_cache,
        source="hf",
        dataset_name="stanfordnlp/sst2",
        train_split="train",
        val_split="validation",
    )
    with pytest.raises(
        SFTError, match=r"could not load Hugging Face dataset 'stanfordnlp/sst2' split 'train'"
    ) as info:
        dm.prepare_data()
    assert "\n" not in str(info.value) and "offline" in str(info.value)


def test_a_local_hf_dataset_without_a_split_names_the_split_settings(tmp_path, token_cache):
    """A local dataset without a `validation` split: the error blamed the offline cache."""
    import datasets

    rows = {"sentence": ["good", "bad"], "label": [1, 0]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(tmp_path / "ds")
    dm = make_dm(tmp_path, token_cache, source="hf", dataset_name=str(tmp_path / "ds"), **HF_SPLITS)
    with pytest.raises(SFTError) as info:
        dm.prepare_data()
    assert str(info.value) == (
        f"{tmp_path / 'ds'} has no split 'validation' (its splits: train); name the dataset's "
        "splits with data.train_split, data.val_split and data.test_split (data.test_split=null: "
        "none)"
    )


def test_a_saved_hf_dataset_keeps_each_splits_classlabel_order(tmp_path, token_cache):
    """A DatasetDict.save_to_disk folder whose validation ClassLabel lists the classes in
    another order than train's: datasets.load_dataset cast every split to train's features,
    so validation's classes were swapped (val/acc 0.2 for 0.8), without a word."""
    import datasets

    def split(texts: list[str], labels: list[int], names: list[str]) -> datasets.Dataset:
        features = datasets.Features(
            {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=names)}
        )
        return datasets.Dataset.from_dict({"sentence": texts, "label": labels}, features=features)

    saved = datasets.DatasetDict(
        train=split(["good", "bad"], [0, 1], ["pos", "neg"]),
        validation=split(["fine", "awful", "great"], [1, 0, 1], ["neg", "pos"]),
    )
    saved.save_to_disk(tmp_path / "ds")
    dm = make_dm(tmp_path, token_cache, source="hf", dataset_name=str(tmp_path / "ds"), **HF_SPLITS)
    dm.setup("fit")
    names = dm.class_names
    assert [names[i] for i in dm.train_data.labels.tolist()] == ["pos", "neg"]
    assert [names[i] for i in dm.val_data.labels.tolist()] == ["pos", "neg", "pos"]


@pytest.mark.parametrize(
    ("file_format", "val_split"),
    [("parquet", "validation"), ("arrow", "validation"), ("parquet", "validation[:100%]")],
)
def test_a_folder_of_split_files_keeps_each_files_classlabel_order(
    tmp_path, token_cache, file_format, val_split
):
    """A folder of train/validation parquet (or arrow) files whose ClassLabels list the classes
    in other orders: load_dataset cast validation to train's features, so its classes were
    swapped, without a word. Each split is read with the names its own file records."""
    import datasets

    def write(split: str, texts: list[str], labels: list[int], names: list[str]) -> None:
        features = datasets.Features(
            {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=names)}
        )
        rows = datasets.Dataset.from_dict({"sentence": texts, "label": labels}, features=features)
        path = tmp_path / "ds" / "data" / f"{split}-00000-of-00001.{file_format}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if file_format == "parquet":
            rows.to_parquet(str(path))
        else:  # an arrow stream with the features in its schema, as datasets writes them
            with datasets.arrow_writer.ArrowWriter(features=features, path=str(path)) as writer:
                writer.write_table(rows.data.table)
                writer.finalize()

    write("train", ["good", "bad"], [0, 1], ["pos", "neg"])
    write("validation", ["fine", "awful", "great"], [1, 0, 1], ["neg", "pos"])
    splits = {**HF_SPLITS, "val_split": val_split}  # a slice of the split's files too
    dm = make_dm(tmp_path, token_cache, source="hf", dataset_name=str(tmp_path / "ds"), **splits)
    dm.setup("fit")
    names = dm.class_names
    assert [names[i] for i in dm.train_data.labels.tolist()] == ["pos", "neg"]
    assert [names[i] for i in dm.val_data.labels.tolist()] == ["pos", "neg", "pos"]
    # a split of two files, the first in train's order, the second in the other: the second
    # is cast to the first's names (was: its classes swapped, since the first agreed)
    (tmp_path / "ds" / "data" / f"validation-00000-of-00001.{file_format}").rename(
        tmp_path / "ds" / "data" / f"validation-00001-of-00002.{file_format}"
    )
    write("validation", ["fine"], [0], ["pos", "neg"])
    dm = make_dm(tmp_path, token_cache, source="hf", dataset_name=str(tmp_path / "ds"), **splits)
    with pytest.raises(SFTError, match=r"the files of split 'validation' record different class"):
        dm.setup("fit")


def test_a_saved_hf_dataset_without_splits_or_a_missing_folder_is_one_line(tmp_path, token_cache):
    """Dataset.save_to_disk (one split): was datasets' own advice inside a load_dataset error;
    a folder that is not there was blamed on the offline datasets cache."""
    import datasets

    datasets.Dataset.from_dict({"sentence": ["good"], "label": [1]}).save_to_disk(tmp_path / "one")
    for folder, line in (
        ("one", "holds one Dataset (Dataset.save_to_disk), without splits: save its splits "),
        ("gone", "data.dataset_name={}: no such folder ({})"),
    ):
        path = str(tmp_path / folder)
        dm = make_dm(tmp_path, token_cache, source="hf", dataset_name=path, **HF_SPLITS)
        with pytest.raises(SFTError) as info:
            dm.prepare_data()
        assert line.format(path, path) in str(info.value) and "\n" not in str(info.value)


def test_hf_dataset_code_path(tmp_path, token_cache, monkeypatch):
    """The HF path on in-memory datasets: ClassLabel names, GLUE-style -1 test labels."""
    import datasets

    import sft.data.readers.hf as hf_reader

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    splits = {
        "train": {"sentence": ["good", "bad", "fine"], "label": [1, 0, 1]},
        "validation": {"sentence": ["ok", "awful"], "label": [1, 0]},
        "test": {"sentence": ["unknown"], "label": [-1]},
    }
    loaded = []

    def fake_load(name, config, split, trust_remote_code, columns=()):
        loaded.append(split)
        return datasets.Dataset.from_dict(splits[split], features=features)

    monkeypatch.setattr(hf_reader, "load_hf_split", fake_load)
    kwargs = {"source": "hf", "dataset_name": "someone/tiny", "batch_size": 2}
    kwargs.update(train_split="train", val_split="validation", test_split="test")
    dm = make_dm(tmp_path, token_cache, **kwargs)
    assert dm.has_labelled_test is False  # auto: every test label is -1
    dm.setup()
    assert dm.class_names == ["neg", "pos"]
    assert dm.train_data.labels.tolist() == [1, 0, 1]
    assert dm.test_data.labels.tolist() == [-1]
    assert next(iter(dm.predict_dataloader()))["labels"].tolist() == [1, 0]  # validation's
    assert dm.cache_files["train"].name.startswith("someone_tiny-train-")
    # scored with a model of the same names in another order: the dataset keeps its own, which
    # sft-eval checks against the model's (the model's must not stand in for them)
    scored = make_dm(tmp_path, token_cache, **kwargs)
    scored.score_with(["pos", "neg"])
    scored.setup("validate")
    assert scored.class_names == ["neg", "pos"]


def hf_splits(monkeypatch, splits: dict[str, tuple[dict, list[str]]]) -> None:
    """load_hf_split serves in-memory splits: name -> (columns, the label column's ClassLabel
    names)."""
    import datasets

    import sft.data.readers.hf as hf_reader

    def fake_load(name, config, split, trust_remote_code, columns=()):
        rows, names = splits[split]
        features = {k: datasets.Value("string") for k in rows if k != "label"}
        features["label"] = datasets.ClassLabel(names=names)
        return datasets.Dataset.from_dict(rows, features=datasets.Features(features))

    monkeypatch.setattr(hf_reader, "load_hf_split", fake_load)


HF_SPLITS = {"train_split": "train", "val_split": "validation", "test_split": None}


@pytest.mark.parametrize("label_names", [None, ["pos", "neg"]])
def test_a_classlabel_column_is_read_by_its_names(tmp_path, token_cache, monkeypatch, label_names):
    """A ClassLabel column holds positions in its own names. They were read as positions in
    data.label_names (in another order: classes swapped without a word), and a validation
    split whose ClassLabel lists the classes in another order was read under train's names."""
    hf_splits(
        monkeypatch,
        {
            "train": ({"sentence": ["good", "bad"], "label": [1, 0]}, ["neg", "pos"]),
            "validation": ({"sentence": ["fine", "awful"], "label": [0, 1]}, ["pos", "neg"]),
        },
    )
    dm = make_dm(
        tmp_path, token_cache, source="hf", dataset_name="x/y", label_names=label_names, **HF_SPLITS
    )
    dm.setup("fit")
    names = dm.class_names
    assert [names[i] for i in dm.train_data.labels.tolist()] == ["pos", "neg"]
    assert [names[i] for i in dm.val_data.labels.tolist()] == ["pos", "neg"]


def test_hf_label_names_of_other_names_rename_the_classlabel_classes(
    tmp_path, token_cache, monkeypatch
):
    """data.label_names naming none of a ClassLabel's names renames its classes, in its order
    (as before); naming some of them is refused: a rename and a reorder cannot both be meant."""
    rows = {"sentence": ["good", "bad"], "label": [1, 0]}
    hf_splits(monkeypatch, {"train": (rows, ["neg", "pos"]), "validation": (rows, ["neg", "pos"])})
    renamed = ["negative", "positive"]
    dm = make_dm(
        tmp_path, token_cache, source="hf", dataset_name="x/y", label_names=renamed, **HF_SPLITS
    )
    dm.setup("fit")
    assert [dm.class_names[i] for i in dm.train_data.labels.tolist()] == ["positive", "negative"]
    mixed = ["pos", "negative"]
    dm = make_dm(
        tmp_path, token_cache, source="hf", dataset_name="x/y", label_names=mixed, **HF_SPLITS
    )
    _error(dm, r"share some names but not all")


def test_hf_label_names_rename_each_splits_classes_by_the_training_splits_order(
    tmp_path, token_cache, monkeypatch
):
    """data.label_names renaming the classes of a dataset whose validation ClassLabel lists
    them in another order: validation was renamed by its own positions, so its "neg" became
    train's "pos" class (val/acc of a perfect model 0), without a word."""
    hf_splits(
        monkeypatch,
        {
            "train": (
                {"sentence": ["good", "bad", "meh"], "label": [2, 0, 1]},
                ["neg", "neu", "pos"],
            ),
            "validation": (
                {"sentence": ["fine", "awful", "so-so"], "label": [0, 1, 2]},
                ["pos", "neg", "neu"],
            ),
        },
    )
    dm = make_dm(
        tmp_path,
        token_cache,
        source="hf",
        dataset_name="x/y",
        label_names=["a", "b", "c"],
        **HF_SPLITS,
    )
    dm.setup("fit")
    names = dm.class_names
    assert [names[i] for i in dm.train_data.labels.tolist()] == ["c", "a", "b"]
    assert [names[i] for i in dm.val_data.labels.tolist()] == ["c", "a", "b"]


def test_hf_label_names_rename_a_split_by_its_own_order_without_a_training_split(
    tmp_path, token_cache, caplog
):
    """sft-eval of another saved dataset, without a train split, with data.label_names renaming
    its classes: the rename by the training split's order failed on "no split 'train'"; the
    split's own order is taken, and said."""
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["n", "p"])}
    )
    rows = {"sentence": ["fine", "awful"], "label": [1, 0]}
    only = datasets.DatasetDict({"validation": datasets.Dataset.from_dict(rows, features=features)})
    only.save_to_disk(tmp_path / "ds")
    dm = make_dm(
        tmp_path,
        token_cache,
        source="hf",
        dataset_name=str(tmp_path / "ds"),
        label_names=["negative", "positive"],
        **HF_SPLITS,
    )
    with caplog.at_level(logging.WARNING):
        labels = dm.load_split("val").labels.tolist()
    assert labels == [1, 0]
    assert "renames its ClassLabel classes ['n', 'p'] in that order" in caplog.text


def test_an_hf_test_split_of_fewer_classes_is_read_by_name(tmp_path, token_cache, monkeypatch):
    """A test split whose ClassLabel lists some of the training split's classes was refused as
    "data.label_names=[...] ... share some names but not all", a setting not given."""
    hf_splits(
        monkeypatch,
        {
            "train": (
                {"sentence": ["good", "bad", "meh"], "label": [2, 0, 1]},
                ["neg", "neu", "pos"],
            ),
            "validation": ({"sentence": ["fine", "awful"], "label": [0, 1]}, ["neg", "pos"]),
            "test": ({"sentence": ["great", "dull"], "label": [1, 0]}, ["neg", "pos"]),
        },
    )
    splits = {**HF_SPLITS, "test_split": "test"}
    dm = make_dm(tmp_path, token_cache, source="hf", dataset_name="x/y", **splits)
    dm.setup()
    names = dm.class_names
    assert [names[i] for i in dm.val_data.labels.tolist()] == ["neg", "pos"]
    assert [names[i] for i in dm.test_data.labels.tolist()] == ["pos", "neg"]


def test_a_local_hf_dataset_folder_is_kept_as_an_absolute_path(tmp_path, token_cache, monkeypatch):
    """A relative data.dataset_name was kept as typed: sft-eval from another folder could not
    find the dataset; `~` was not expanded."""
    (tmp_path / "my_ds").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("my_ds", "~/my_ds"):
        dm = make_dm(tmp_path, token_cache, source="hf", dataset_name=name, **HF_SPLITS)
        assert dm.hparams.dataset_name == str(tmp_path / "my_ds")
    dm = make_dm(tmp_path, token_cache, source="hf", dataset_name="owner/name", **HF_SPLITS)
    assert dm.hparams.dataset_name == "owner/name"  # a hub id


def test_a_local_csv_folder_through_datasets_reads_cells_as_written(tmp_path, token_cache):
    """`data=hf_dataset` on a folder of CSV files: pandas' defaults made the label `NA` missing
    ("the label is missing"), the texts NaN, null and None empty, and a column of numbers
    floats ("'text' must be a string, got float"); data=text_files read them as written."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\nNA,NA\nnull,EU\nNone,NA\n1000,EU\n0.50,NA\n")
    (folder / "validation.csv").write_text("text,label\nNaN,EU\n")
    dm = make_dm(
        tmp_path,
        token_cache,
        source="hf",
        dataset_name=str(folder),
        text_column="text",
        label_names=["NA", "EU"],
        **HF_SPLITS,
    )
    train = dm.reader.read("train")
    assert train.texts == ["NA", "null", "None", "1000", "0.50"]
    assert train.labels == [0, 1, 0, 1, 0]


def test_hf_text_cells_that_are_not_strings():
    """An empty CSV cell (None) was trained on as the text "None", and a list column as its
    repr; None is an empty text now, as in sft's other readers, and a list is refused."""
    from sft.data.readers.hf import read_hf_split
    from sft.data.readers.labels import LabelMap

    rows = _Rows(sentence=[None, "bad"], pair=["x", None], label=[1, 0])
    read = read_hf_split(rows, "x/y[train]", "sentence", "pair", "label", LabelMap(None), True)
    assert read.texts == ["", "bad"] and read.pairs == ["x", ""]
    rows = _Rows(tokens=[["a", "good", "film"]], label=[1])
    with pytest.raises(SFTError, match=r"x/y\[train\], row 0: 'tokens' must be a string, got list"):
        read_hf_split(rows, "x/y[train]", "tokens", None, "label", LabelMap(None), True)


class _Rows(dict):
    """A loaded split as read_hf_split reads it: columns by name, a length."""

    @property
    def column_names(self) -> list[str]:
        return list(self)

    def __len__(self) -> int:
        return len(next(iter(self.values())))


# ---- Hydra configs -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sst2", "sst5", "sst2_trees", "text_files", "hf_dataset"])
def test_data_configs_instantiate(name, tmp_path, token_cache):
    from conftest import compose_config

    cfg = compose_config(
        "train",
        [f"data={name}", "data.tokenizer=minilm", f"data.cache_dir={token_cache}"],
        tmp_path,
    )
    dm = instantiate(cfg.data)
    assert isinstance(dm, TextClassificationDataModule)
    assert dm.hparams.seed == cfg.seed and dm.hparams.tokenizer == "minilm"
    if name in ("sst2", "sst5", "sst2_trees"):
        assert dm.has_labelled_test is False
    if name == "sst2_trees":
        assert dm.hparams.binary and dm.hparams.source == "sst_trees"
    if name == "sst2":  # hparams are plain (checkpoints load with weights_only=True)
        assert type(dm.hparams.label_names) is list


@pytest.mark.parametrize(("test_labels", "scored"), [([1, 0], True), ([-1, -1], False)])
def test_data_hf_dataset_scores_a_labelled_test_split(
    test_labels, scored, tmp_path, token_cache, monkeypatch
):
    """data=hf_dataset's test split was never scored (test_labelled: false), and the messages
    said it had no labels; now its labels decide, GLUE's -1 test labels still meaning none."""
    from conftest import compose_config

    rows = {"sentence": ["good", "bad"], "label": [1, 0]}
    test = {"sentence": ["fine", "awful"], "label": test_labels}
    names = ["neg", "pos"]
    hf_splits(
        monkeypatch, {"train": (rows, names), "validation": (rows, names), "test": (test, names)}
    )
    overrides = ["data=hf_dataset", "data.tokenizer=minilm", f"data.cache_dir={token_cache}"]
    dm = instantiate(compose_config("train", overrides, tmp_path).data)
    assert dm.has_labelled_test is scored


def test_texts_cut_at_max_length_are_counted_on_a_miss_and_a_hit(tmp_path, caplog):
    """Truncation was never said: 54 of 872 dev sentences cut with a BPE tokenizer at 64."""
    dm = sst2_dm(tmp_path, max_length=12)
    texts = [line.split("\t")[0] for line in (SST2 / "dev.tsv").read_text().splitlines()[1:]]
    cut = sum(len(dm.tokenizer(t)["input_ids"]) > 12 for t in texts)
    assert 0 < cut < len(texts)
    expected = f"{cut} of {len(texts)} texts are longer than data.max_length=12 tokens and are cut"
    for hit in (False, True):
        caplog.clear()
        dm = sst2_dm(tmp_path, max_length=12)
        dm.load_split("val")
        assert dm.cache_hits["val"] is hit
        assert any(expected in m for m in logged_warnings(caplog)), caplog.text


def test_an_unreadable_token_cache_file_is_tokenized_again_without_torchs_advice(tmp_path, caplog):
    """torch's message told the user to load the file with weights_only=False (running any
    code it holds) or to file an issue with torch."""
    from sft.data.token_cache import load_split

    path = tmp_path / "split.pt"
    path.write_bytes(b"not a token cache")
    with caplog.at_level(logging.WARNING, logger="sft.data.token_cache"):
        assert load_split(path, "key") is None
    assert f"tokens: cache file {path} is unreadable (a weights-only load refuses it: " in (
        caplog.text
    )
    assert "weights_only" not in caplog.text
