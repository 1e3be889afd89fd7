"""Text classification data (SST-2/SST-5, users' TSV/CSV/JSONL, HF datasets) as token batches.

Each split is read once, tokenised once with the backbone's fast tokenizer and cached on disk
(`sft.data.token_cache`); batches are padded per batch by HF's `DataCollatorWithPadding`, and
training batches are grouped by length (`sft.data.length_grouped`) so that padding stays small.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import torch
from annotated_types import Ge
from torch.utils.data import DataLoader

from sft.contracts import TOKENIZER_DIGEST, InputSpec
from sft.data.base import SFTDataModule, absolute_dir, check_batch_size
from sft.data.length_grouped import LengthGroupedSampler
from sft.data.readers import ReaderSettings, create_reader
from sft.data.readers.files import FileReader
from sft.data.resumable import ResumableRandomSampler, split_loader
from sft.data.subsets import (
    check_few_label_args,
    few_label_indices,
    warn_classes_without_examples,
)
from sft.data.token_batches import TokenBatchCollator, TokenDataset
from sft.data.token_cache import (
    TokenizedSplit,
    cached_tokenize,
    default_cache_dir,
    load_tokenizer,
    tokenizer_digest,
)
from sft.errors import SFTError
from sft.hub import local_or_hub_name
from sft.utils.io import expand_home
from sft.utils.logs import first_few, rank_zero_warning
from sft.utils.overrides import quoted_list_override

log = logging.getLogger(__name__)
# the training split a checkpoint's run read (state_dict): its token-cache key, its example count
TRAIN_TOKENS = "train_tokens"
TRAIN_EXAMPLES = "train_examples"

ROLES = ("train", "val", "test")
# the share of a split's word tokens that are [UNK] above which its tokenizer does not fit its
# texts (SST-2 with MiniLM's own tokenizer: 0 of 228k; sentence-case prose with an uncased
# vocabulary whose tokenizer keeps case: 5-18 %)
UNKNOWN_SHARE = 0.04


class TextClassificationDataModule(SFTDataModule):
    """Sentence (or sentence-pair) classification from files under `data_dir` or HF `datasets`.

    `source` picks the reader (`sft.data.readers`), which takes its own options as well:
    - `tsv` / `csv`: a header row, then one example per row; columns `text_column` (and
      `text_pair_column`), `label_column`. `quoting="none"` (default for tsv, GLUE style)
      keeps `"` as an ordinary character; `"minimal"` (default for csv) reads quoted fields.
    - `jsonl`: one JSON object per line with those keys.
    - `sst_trees`: SST PTB trees (`binary`, `phrases`: see `sft.data.readers.sst_trees`).
    - `hf`: `datasets.load_dataset(dataset_name, dataset_config, split=<split>)`.
    `train_split` / `val_split` / `test_split`: files under `data_dir`, or HF split names.
    `cache_dir`: where token ids are cached; None: `default_cache_dir()` (the configs' default).

    Labels are names from `label_names` or integer indices; without `label_names` they must be
    integers and the class count is max(train label) + 1. Validation is `val_split` (required);
    the test split may be unlabelled (no label column, or HF's -1): then `has_labelled_test` is
    False, its rows get label -1 and no loader serves them; `predict_dataloader` serves the
    validation split then, as without a test split (the split sft-eval scores). Batches are dicts `input_ids`,
    `attention_mask`, `token_type_ids` (when the tokenizer makes them) and int64 `labels`.
    """

    # the token cache folder: where the training machine kept it (another user's, or gone)
    machine_settings = ("cache_dir", "num_workers")

    modality = "text"

    def __init__(
        self,
        data_dir: str,
        source: str = "tsv",
        train_split: str = "train.tsv",
        # None only to say why it is required (was: "expected a string, got None")
        val_split: str | None = "dev.tsv",
        test_split: str | None = None,
        text_column: str = "sentence",
        text_pair_column: str | None = None,
        label_column: str = "label",
        label_names: Sequence[str] | None = None,
        quoting: str | None = None,
        test_labelled: bool | None = None,
        binary: bool = False,
        phrases: bool = False,
        dataset_name: str | None = None,
        dataset_config: str | None = None,
        tokenizer: str = "minilm",
        trust_remote_code: bool = False,
        max_length: int = 128,
        pad_to_multiple_of: int | None = None,
        cache_dir: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        group_by_length: bool = True,
        pool_batches: int | None = 50,
        seed: int | None = 0,
        train_fraction: float | None = None,
        samples_per_class: int | None = None,
        num_workers: Annotated[int, Ge(0)] = 0,
        drop_last: bool = False,
        allow_empty_text: bool = True,
    ) -> None:
        super().__init__()
        data_dir = absolute_dir(data_dir)
        tokenizer = local_or_hub_name(tokenizer) if isinstance(tokenizer, str) else tokenizer
        # a local dataset folder, as the checkpoint keeps it (was: relative, as typed, and
        # sft-eval from another folder could not find it; `~` was not expanded)
        if isinstance(dataset_name, str):
            dataset_name = local_or_hub_name(dataset_name)
        # Plain lists (not ListConfig) so hparams round-trip through checkpoints and yaml.
        label_names = [str(n) for n in label_names] if label_names is not None else None
        cache_dir = str(cache_dir) if cache_dir is not None else None
        self._check_args(locals())
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        settings = ReaderSettings(
            data_dir=expand_home(data_dir),
            splits=self.splits,
            text_column=text_column,
            text_pair_column=text_pair_column,
            label_column=label_column,
            label_names=label_names,
            test_labelled=test_labelled,
            trust_remote_code=trust_remote_code,
        )
        # every source's own options, flat as the configs (and checkpoints' hparams) hold them
        options = {
            "quoting": quoting,
            "binary": binary,
            "phrases": phrases,
            "dataset_name": dataset_name,
            "dataset_config": dataset_config,
        }
        self.reader = create_reader(source, settings, options)
        # logger=False: train.py logs the whole run config once
        self.save_hyperparameters(logger=False)

        # read by sft-predict, sft-export and checkpoints without class names
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_names = label_names
        self.tokenizer_name = tokenizer
        self.trust_remote_code = trust_remote_code
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.cache_dir = expand_home(cache_dir) if cache_dir else default_cache_dir()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.group_by_length = group_by_length
        self.pool_batches = pool_batches
        # seed=null (an unseeded run) still needs one data order that every DDP rank agrees on
        self.seed = 0 if seed is None else int(seed)
        self.train_fraction = train_fraction
        self.samples_per_class = samples_per_class
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.allow_empty_text = allow_empty_text

        self._tokenizer: Any = None
        # the digest of the tokenizer a checkpoint's model was trained with (configure_input)
        self._trained_tokenizer: str | None = None
        self._tokenizer_digest: str | None = None
        self._collator: TokenBatchCollator | None = None
        self._loaded: dict[str, TokenizedSplit] = {}
        self.cache_files: dict[str, Path] = {}
        self._train_key: str | None = None  # state_dict's, computed once
        self.cache_hits: dict[str, bool] = {}
        self.train_data: TokenDataset | None = None
        self.val_data: TokenDataset | None = None
        self.test_data: TokenDataset | None = None

    @staticmethod
    def _check_args(args: dict[str, Any]) -> None:
        """The settings of every source; the reader checks its own (create_reader)."""
        max_length = args["max_length"]
        # the smallest length that leaves room for text is the tokenizer's to say (`tokenizer`)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise SFTError(f"data.max_length must be a positive integer, got {max_length!r}")
        check_batch_size("batch_size", args["batch_size"])
        if args["eval_batch_size"] is not None:
            check_batch_size("eval_batch_size", args["eval_batch_size"])
        for key in ("pool_batches", "pad_to_multiple_of"):
            if args[key] is not None:
                check_batch_size(key, args[key])
        check_few_label_args(args["train_fraction"], args["samples_per_class"])
        if not args["train_split"]:
            raise SFTError("data.train_split: required, the file (or split) to train on")
        if not args["val_split"]:
            raise SFTError(
                f"data.val_split={args['val_split'] if args['val_split'] is not None else 'null'}"
                ": text data validates on a split of its own (none is carved out of training); "
                "name it, data.val_split=<file or split>, or split the training file yourself"
            )

    # ---- tokenizer, collator ---------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            tokenizer = load_tokenizer(self.tokenizer_name, self.trust_remote_code)
            limit = tokenizer.model_max_length
            if limit < 1_000_000 and self.max_length > limit:  # huge = "no limit recorded"
                raise SFTError(
                    f"data.max_length={self.max_length} exceeds the {limit} positions of "
                    f"tokenizer {self.tokenizer_name!r}"
                )
            pair = self.text_pair_column is not None
            if pair and not _separates_pairs(tokenizer):
                raise SFTError(
                    f"data.text_pair_column={self.text_pair_column}: tokenizer "
                    f"{self.tokenizer_name!r} puts nothing between a pair's two texts (it adds no "
                    "special tokens to a pair), so the model could not tell which text a word is "
                    "from: use a tokenizer with a pair template ([SEP], </s></s>: the model's "
                    "own, saved with its post-processor)"
                )
            # truncated to its special tokens, every text (or a pair's second) would train as an
            # empty one: longest-first truncation keeps a token of each text at specials + 2
            specials = tokenizer.num_special_tokens_to_add(pair=pair)
            least = specials + (2 if pair else 1)
            if self.max_length < least:
                room = "for both texts of a pair" if pair else "for text"
                raise SFTError(
                    f"data.max_length={self.max_length} leaves no room {room}: tokenizer "
                    f"{self.tokenizer_name!r} adds {specials} special tokens; give at least "
                    f"{least}"
                )
            self._tokenizer = tokenizer
            expected = self._trained_tokenizer
            if expected is not None and self._digest() != expected:
                rank_zero_warning(
                    log,
                    f"tokenizer {self.tokenizer_name!r} is not the one the model was trained "
                    "with (its files changed since, or data.tokenizer names another): its token "
                    "ids may stand for other words than the model learnt",
                )
        return self._tokenizer

    def _digest(self) -> str:
        """The tokenizer's digest, computed once (checkpoints are saved many times)."""
        if self._tokenizer_digest is None:
            self._tokenizer_digest = tokenizer_digest(self.tokenizer)
        return self._tokenizer_digest

    def configure_input(self, spec: InputSpec) -> None:
        super().configure_input(spec)
        self._trained_tokenizer = spec.tokenizer_digest
        # before any tokenising (was: an error at the first batch that long, in training or
        # only later, in sft-predict, for a run whose data held no text that long)
        if spec.max_positions is not None and self.max_length > spec.max_positions:
            raise SFTError(
                f"data.max_length={self.max_length} exceeds the {spec.max_positions} positions "
                f"of the model's backbone: set data.max_length={spec.max_positions} (or less)"
            )
        multiple = self.pad_to_multiple_of
        padded = -(-self.max_length // multiple) * multiple if multiple else self.max_length
        if spec.max_positions is not None and padded > spec.max_positions:
            # (was: the error at the first batch, advising the data.max_length already set)
            raise SFTError(
                f"data.pad_to_multiple_of={multiple} pads a batch of data.max_length="
                f"{self.max_length} tokens to {padded}, past the {spec.max_positions} positions "
                "of the model's backbone: give a smaller multiple (8 or 16 suit most hardware), "
                "or null"
            )

    def rebuild_info(self) -> dict[str, Any]:
        return {**super().rebuild_info(), TOKENIZER_DIGEST: self._digest()}

    @property
    def collator(self) -> TokenBatchCollator:
        if self._collator is None:
            self._collator = TokenBatchCollator(self.tokenizer, self.pad_to_multiple_of)
        return self._collator

    # ---- reading (by the reader of data.source) --------------------------------------------
    def load_split(self, role: str) -> TokenizedSplit:
        """The tokenised split `role` (train/val/test): from memory, the disk cache, or built."""
        if role not in self._loaded:
            reader = self.reader
            split, path, hit = cached_tokenize(
                self.cache_dir,
                reader.cache_name(role),
                reader.cache_key(role),
                lambda: reader.read(role),
                self.tokenizer,
                self.max_length,
            )
            if len(split) == 0:
                raise SFTError(
                    f"{reader.where(role)}: the {role} split has no examples"
                    + reader.empty_split_note
                )
            for warning in split.warnings:
                rank_zero_warning(log, f"{reader.where(role)}, {warning}")
            self._check_empty_texts(role, split)
            self._check_unknown_tokens(role, split)
            self._loaded[role] = split
            self.cache_files[role], self.cache_hits[role] = path, hit
        return self._loaded[role]

    def _check_empty_texts(self, role: str, split: TokenizedSplit) -> None:
        """Rows with no tokens besides the special ones: empty or whitespace-only texts. A warning
        with their count and first lines, or an error with `allow_empty_text=false`. Checked on
        the tokens, so that a cached split is checked too."""
        pair = self.text_pair_column is not None
        if pair:  # either text empty (the tokenizer separates them: checked when loaded)
            empty = (_texts_per_row(split, _separator_ids(self.tokenizer)) < 2).nonzero()
        else:
            specials = self.tokenizer.num_special_tokens_to_add(pair=False)
            empty = (split.lengths <= specials).nonzero()
        empty = empty.flatten()
        if not empty.numel():
            return
        message = (
            f"{self.reader.where(role)}: {empty.numel()} of {len(split)} {role} examples have an "
            f"empty or whitespace-only text{' (or pair text)' if pair else ''} ({self.reader.row_kind} "
            f"{first_few(split.lines[empty].tolist(), 5)})"
        )
        if not self.allow_empty_text:
            raise SFTError(f"{message}; remove them or set data.allow_empty_text=true")
        rank_zero_warning(
            log, f"{message}: they are kept; data.allow_empty_text=false refuses them"
        )

    def _check_unknown_tokens(self, role: str, split: TokenizedSplit) -> None:
        """A warning when many of a split's words are the unknown token: a tokenizer that keeps
        the case of words for an uncased vocabulary (or the reverse) trained on [UNK] for every
        capitalised word without a sign."""
        unknown = self.tokenizer.unk_token_id
        separators = _separator_ids(self.tokenizer)
        # an unknown token that is also a separator (GPT-NeoX's <|endoftext|>) is not a word's
        if unknown is None or unknown in separators.tolist() or not split.input_ids.numel():
            return
        ids = split.input_ids.long()
        words = ~torch.isin(ids, separators)
        share = int((ids[words] == unknown).sum()) / max(int(words.sum()), 1)
        if share > UNKNOWN_SHARE:
            rank_zero_warning(
                log,
                f"{self.reader.where(role)}: {share:.0%} of the {role} split's tokens are the "
                f"tokenizer's unknown token {self.tokenizer.unk_token!r}: tokenizer "
                f"{self.tokenizer_name!r} does not cover these texts; check that it lower-cases "
                "as its vocabulary needs (do_lower_case, or lowercase in tokenizer.json) and "
                "that it is the model's own (else the texts hold characters its vocabulary "
                "lacks, such as emoji)",
            )

    def _check_labels(self, role: str, split: TokenizedSplit, num_classes: int) -> None:
        labels = split.labels
        bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
        if role == "test" and not (labels >= 0).any():  # unlabelled (-1): predicted only
            return
        if role == "test" and (labels == -1).any():
            # some rows without labels: the file is scored, and their -1 reached the loss
            i = int((labels == -1).nonzero()[0])
            raise SFTError(
                f"{self.reader.where(role)}, line {int(split.lines[i])}: no label (-1 or empty) while "
                f"other rows have labels: label every row to score the file, or none (all -1 or empty, "
                "or no label column) to predict it only"
            )
        if bad.numel():
            i = int(bad[0])
            raise SFTError(
                f"{self.reader.where(role)}, line {int(split.lines[i])}: label {int(labels[i])} is not "
                f"in the label set (0..{num_classes - 1}, "
                + (
                    "the classes of the model scored)"
                    if self.model_class_names is not None
                    else "learned from the training split; set data.label_names to fix the classes)"
                )
            )

    # ---- Lightning hooks ---------------------------------------------------------------------
    def prepare_data(self) -> None:
        # One process per node runs this before setup(): it fills the token cache (and the HF
        # download) so the other ranks only read it. Kept in memory, since setup() of this
        # process wants the same tensors.
        roles = self._fit_roles() if self.model_class_names is None else [self._scored_role()]
        for role in roles:
            if self.splits[role]:
                self.load_split(role)

    def score_with(self, class_names: Sequence[str]) -> None:
        """As SFTDataModule's; without data.label_names, the scored file's labels may be the
        model's class names too (sft-eval data=text_files ...: they were refused as not
        integers, while the checkpoint knew the names)."""
        super().score_with(class_names)
        # a file's, not an HF dataset's: its ClassLabel names are checked against the model's;
        # nor a format's own classes (SST trees': a 5-class model read binary trees' labels 0/1
        # as its classes 0/1, and scored them without a word)
        from_files = isinstance(self.reader, FileReader)
        if self.reader.label_map().names is None and from_files:
            self.reader.settings = replace(self.reader.settings, label_names=self.model_class_names)

    def _fit_roles(self) -> list[str]:
        """The splits sft-train reads: the test split only when the run tests."""
        return [r for r in ROLES if self.splits[r] and (r != "test" or self.test_wanted)]

    def _scored_role(self) -> str:
        return "test" if self.has_labelled_test else "val"

    def known_class_names(self) -> list[str] | None:
        names = self.reader.settings.label_names
        return [str(n) for n in names] if names is not None else None

    def setup(self, stage: str | None = None) -> None:
        names = self.reader.label_map().names or self.model_class_names
        if names is None:  # integer labels: the class count comes from the training split
            names = [str(i) for i in range(self._integer_class_count())]
        self.class_names, self.num_classes = names, len(names)
        scoring = self.model_class_names is not None  # sft-eval: only the scored split is read
        if (stage in (None, "fit") or (stage == "validate" and not scoring)) and (
            self.val_data is None
        ):
            self._setup_train_val()
        # predictions are of the split that is scored: validation stands in for an unlabelled test
        wants_test = stage in (None, "test") or (stage == "predict" and self.has_labelled_test)
        if wants_test and self.test_data is None and self.splits["test"]:
            self.test_data = self._checked("test")
        wants_val = stage == "validate" or (stage == "predict" and not self.has_labelled_test)
        if wants_val and self.val_data is None:
            self.val_data = self._checked("val")
        splits = {"train": self.train_data, "val": self.val_data, "test": self.test_data}
        self.log_splits("text data", splits)

    def _integer_class_count(self) -> int:
        """The largest training label + 1, unless it leaves far more classes without examples
        than with (more than the classes seen, and more than 1,000; a dataset's subset may leave
        many): one mistyped label (10000000) made ten million classes, 2.4 GB of class names and
        warnings of 89 MB, and the advice to set model.num_classes=10000001."""
        split = self.load_split("train")
        top, present = int(split.labels.max()), int(split.labels.unique().numel())
        if top + 1 - present > max(present, 1000):
            line = int(split.lines[int(split.labels.argmax())])
            raise SFTError(
                f"{self.reader.where('train')}, line {line}: label {top} would make {top + 1:,} "
                f"classes, only {present:,} of them with examples: integer labels are class indices, "
                "0 to the number of classes - 1; correct the label, or name the classes "
                "(data.label_names=[...]) to read the labels as names"
            )
        return top + 1

    def _check_first_label(self, labels: torch.Tensor) -> None:
        """Integer labels are class indices from 0; labels counted from 1 (1..K) would train a
        class 0 of no examples, and the class-count error would ask for K + 1 classes. The
        names suggested are the labels present (star ratings 1, 3, 5: three classes, not six)."""
        present = labels.unique().tolist()
        if present and present[0] > 0:
            names = quoted_list_override("data.label_names", [str(n) for n in present])
            rank_zero_warning(
                log,
                f"{self.reader.where('train')}: the integer labels start at {present[0]}, and "
                f"labels are class indices from 0; if they are not, name the classes instead: "
                f"{names}",
            )
            # the model's class-count error then offers these names before the count that
            # would train classes of no examples
            self.class_count_hint = (
                f"the integer labels start at {present[0]}: if they are not class indices, "
                f"name the classes, {names} ({len(present)} classes)"
            )

    def _checked(self, role: str) -> TokenDataset:
        split = self.load_split(role)
        self._check_labels(role, split, self.num_classes)
        if role != "train":  # training's classes are checked on the examples it keeps
            split_name = {"val": "validation", "test": "test"}[role]
            warn_classes_without_examples(
                split.labels, self.class_names, self.reader.where(role), split_name
            )
        return TokenDataset(split)

    def _setup_train_val(self) -> None:
        train = self._checked("train")
        if self.reader.label_map().names is None:  # integer labels: once, where training reads
            self._check_first_label(train.labels)
        keep = few_label_indices(
            train.labels, self.train_fraction, self.samples_per_class, seed=self.seed
        )
        self.train_data = TokenDataset(train.split, keep)
        warn_classes_without_examples(
            self.train_data.labels, self.class_names, self.reader.where("train")
        )
        self.check_train_batch(len(keep), self.reader.where("train"))
        self.val_data = self._checked("val")
        if "test" in self._fit_roles():  # read by prepare_data: its labels fail before training
            self._check_labels("test", self.load_split("test"), self.num_classes)
        self._warn_repeated_content()

    def _warn_repeated_content(self) -> None:
        """A warning when the validation or test split is the training split's content (the
        same file given twice, or a copy): its scores would be on examples the model trains on;
        or when the test split is the validation split's: testing scores the examples the best
        checkpoint is chosen on (image folders warn alike of their linked files)."""
        reader = self.reader
        roles = self._fit_roles()
        pairs = [(a, b) for i, a in enumerate(roles) for b in roles[i + 1 :]]
        if isinstance(reader, FileReader):  # files of other sizes differ: not hashed again
            size = {role: reader.path(role).stat().st_size for role in roles}
            pairs = [(a, b) for a, b in pairs if size[a] == size[b]]
        names = {"train": "training", "val": "validation", "test": "test"}
        content = functools.cache(reader.content_key)  # a file hashed once, whatever its pairs
        warned = set()  # a split once: the training split's examples say it all
        for first, role in pairs:
            if role in warned or content(role) != content(first):
                continue
            warned.add(role)
            name = names[role]
            consequence = (
                f"{name} scores examples the model trains on"
                if first == "train"
                else "testing scores the examples the best checkpoint is chosen on"
            )
            rank_zero_warning(
                log,
                f"{reader.where(role)}: the {name} split holds the {names[first]} split's "
                f"examples ({reader.where(first)}): {consequence}",
            )

    def state_dict(self) -> dict[str, Any]:
        """What the training split was (its token-cache key: the file's content, the reader's
        settings, tokenizer and max_length; and the examples kept), for a run continued from
        the checkpoint to compare."""
        if "train" not in self.cache_files or self.train_data is None:
            return {}
        if self._train_key is None:  # once (a file's digest): checkpoints call this often
            # not the cache file's key, which changes with the cache's format version
            parts = {**self.reader.cache_key("train"), "max_length": self.max_length}
            text = json.dumps(parts, sort_keys=True, default=str)
            self._train_key = hashlib.sha256(text.encode()).hexdigest()[:20]
        return {TRAIN_TOKENS: self._train_key, TRAIN_EXAMPLES: len(self.train_data)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """A run continued from a checkpoint (resume=, ckpt_path=) on other training data (the
        file edited, or other reader settings, max_length, subset): a warning, as the position
        in the epoch and the schedule it continues were set for that data (was: no word)."""
        now = self.state_dict()
        if not now or self.model_class_names is not None:  # sft-eval: other data by design
            return
        changed = [k for k in (TRAIN_TOKENS, TRAIN_EXAMPLES) if state_dict.get(k, now[k]) != now[k]]
        if not changed:
            return
        what = (
            "the file or the settings it is read with changed"
            if TRAIN_TOKENS in changed
            else "another subset of the same file"
        )
        rank_zero_warning(
            log,
            f"{self.reader.where('train')}: not the training data the checkpoint's run read "
            f"({what}; then {state_dict.get(TRAIN_EXAMPLES)} examples, now "
            f"{now[TRAIN_EXAMPLES]}): the run continues at that run's position in its epoch and "
            "its learning-rate schedule, which were set for that data",
        )

    @property
    def has_labelled_test(self) -> bool:
        """Whether `test_dataloader` has labels to score; known before setup (the reader looks at
        a header at most, an HF split is read); False when the run does not test."""
        if not self.splits["test"] or not self.test_wanted:
            return False
        if self.test_data is not None:  # read: its labels tell (all -1 when unlabelled)
            return bool((self.test_data.labels >= 0).any())
        return self.reader.has_labels("test")

    # ---- loaders -----------------------------------------------------------------------------
    def _loader(self, data: TokenDataset | None, what: str, **kwargs: Any) -> DataLoader:
        if data is None:
            raise RuntimeError(
                f"TextClassificationDataModule: call setup() before the {what} loader"
            )
        return split_loader(
            data,
            what,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        data = self.train_data
        if not self.group_by_length:
            sampler = ResumableRandomSampler(data) if data is not None else None
            return self._loader(
                data, "train", batch_size=self.batch_size, sampler=sampler, drop_last=self.drop_last
            )
        if data is None:
            return self._loader(None, "train")
        trainer = self.trainer
        shard = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
        sampler = LengthGroupedSampler(
            data.lengths,
            self.batch_size,
            num_replicas=shard.get("num_replicas", 1),
            rank=shard.get("rank", 0),
            seed=self.seed,
            pool_batches=self.pool_batches,
        )
        return self._loader(
            data, "train", batch_size=self.batch_size, sampler=sampler, drop_last=self.drop_last
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(
            self.val_data,
            "val",
            batch_size=self.eval_batch_size,
            sampler=self.eval_sampler(self.val_data),
        )

    def test_dataloader(self) -> DataLoader:
        if self.splits["test"] and not self.has_labelled_test:
            raise SFTError(
                f"{self.reader.where('test')} has no labels to test on; sft-eval scores "
                "validation, and `sft-predict inputs=<its file>` predicts it"
            )
        if not self.splits["test"]:
            raise SFTError("this text data has no test split (data.test_split); validation is val")
        return self._loader(
            self.test_data,
            "test",
            batch_size=self.eval_batch_size,
            sampler=self.eval_sampler(self.test_data),
        )

    def predict_dataloader(self) -> DataLoader:
        """The split sft-eval scores, in file order: the labelled test split, else validation."""
        return self._loader(self.scored_data(), "predict", batch_size=self.eval_batch_size)

    def predicted_ids(self) -> list[str]:
        """Each predicted text's line in its file (its row in an HF split)."""
        return [str(line) for line in self.scored_data().source_lines()]

    def probe_dataloader(self) -> DataLoader:
        # Sorted by length: the linear probe does not care about order, and batches of similar
        # lengths carry little padding (several times faster than file order on SST-2).
        data = self.train_data
        order = None if data is None else torch.argsort(data.lengths, stable=True).tolist()
        return self._loader(data, "probe", batch_size=self.eval_batch_size, sampler=order)

    def transform_batch(self, batch: Any, train: bool) -> Any:
        return batch  # already model inputs; text has no on-device augmentation


def _separates_pairs(tokenizer: Any) -> bool:
    """Whether the tokenizer marks where a pair's second text starts: more special tokens for a
    pair than for one text (BERT's [SEP], RoBERTa's </s></s>)."""
    return tokenizer.num_special_tokens_to_add(pair=True) > tokenizer.num_special_tokens_to_add(
        pair=False
    )


def _separator_ids(tokenizer: Any) -> torch.Tensor:
    """The tokens a tokenizer adds around and between texts ([CLS], [SEP], <s>, </s>, padding);
    not [UNK] or [MASK], which stand for words."""
    names = ("cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id", "pad_token_id")
    ids = {getattr(tokenizer, name, None) for name in names} - {None}
    return torch.tensor(sorted(ids), dtype=torch.long)


def _texts_per_row(split: TokenizedSplit, separators: torch.Tensor) -> torch.Tensor:
    """How many non-empty texts each row holds: its runs of tokens between the tokenizer's
    special tokens (a sentence pair with one side empty has one)."""
    ids = split.input_ids.long()
    if not ids.numel():
        return torch.zeros(len(split), dtype=torch.long)
    word = ~torch.isin(ids, separators)
    row_start = torch.zeros_like(word)
    row_start[split.offsets[:-1][split.lengths > 0]] = True
    after_separator = torch.cat([torch.ones(1, dtype=torch.bool), ~word[:-1]])
    run_starts = word & (after_separator | row_start)
    rows = torch.repeat_interleave(torch.arange(len(split)), split.lengths)
    return torch.bincount(rows[run_starts], minlength=len(split))
