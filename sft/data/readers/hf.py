"""Hugging Face `datasets`: `datasets.load_dataset(data.dataset_name, data.dataset_config,
split=<split>)`, its columns read like a table's."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sft.data.readers.base import ReaderSettings, TextReader
from sft.data.readers.columns import check_columns
from sft.data.readers.examples import UNLABELLED, TextExamples
from sft.data.readers.labels import LabelMap, as_int
from sft.errors import SFTError
from sft.hub import hub_unreachable
from sft.utils.io import expand_home

log = logging.getLogger(__name__)


def load_hf_split(
    name: str,
    config: str | None,
    split: str,
    trust_remote_code: bool,
    columns: Sequence[str] = (),
) -> Any:
    """`datasets.load_dataset(name, config, split=split)`; one line when it cannot be had
    (typically offline and not in the local datasets cache). A local folder of CSV/TSV files has
    `columns` read as written, as data=text_files reads them."""
    datasets = import_datasets()
    folder = expand_home(name)
    if (folder / SAVED_SPLITS).is_file() or (folder / SAVED_DATASET).is_file():
        return load_saved_split(folder, name, config, split)
    if name.startswith(("/", ".", "~")) and not folder.exists():  # a path, not a hub name
        raise SFTError(f"data.dataset_name={name}: no such folder ({folder.absolute()})")

    kwargs: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
    # offline, datasets asks the hub with retries for ~25 s before it looks in its cache: one
    # request decides, and an unreachable hub means its offline mode (the cache, or a clear error)
    offline = not folder.exists() and (
        hub_unreachable(name, "README.md", repo_type="dataset") is not None
    )
    try:
        with datasets_offline(offline):
            if not folder.exists():
                return datasets.load_dataset(name, config, split=split, **kwargs)
            builder = datasets.load_dataset_builder(name, config, **kwargs)
            if builder.name == "csv":  # pandas.read_csv: its defaults made NA, null, None and
                # NaN missing (a label `NA` of the class NA refused as missing, a text `null`
                # read as empty), and a column of numbers floats
                kwargs.update(na_filter=False, converters={column: str for column in columns})
            dataset = datasets.load_dataset(name, config, split=split, **kwargs)
            files = builder.config.data_files or {}
            return _with_its_own_classlabels(dataset, files, name, config, split, kwargs)
    except SFTError:
        raise
    except Exception as e:  # offline, unknown name/split, ...: all are the user's to fix
        reason = " ".join(str(e).split())[:200]
        if "Unknown split" in str(e):
            how = NAME_THE_SPLITS  # (was: blamed on the offline cache)
        elif folder.exists():  # a local dataset: no cache or network involved
            how = (
                "a local dataset is a folder that datasets.load_dataset reads (of data files, "
                "or written by DatasetDict.save_to_disk); else export it to a TSV/CSV/JSONL "
                "file and use data=text_files"
            )
        else:
            how = (
                "offline it must already be in the local datasets cache (load it once with "
                "network access), or export it to a TSV/CSV/JSONL file and use data=text_files"
            )
        raise SFTError(
            f"could not load Hugging Face dataset {name!r}"
            + (f" ({config!r})" if config else "")
            + f" split {split!r} ({type(e).__name__}: {reason}); {how}"
        ) from None


def _with_its_own_classlabels(
    dataset: Any,
    files: Mapping[str, Sequence[str]],
    name: str,
    config: str | None,
    split: str,
    kwargs: dict[str, Any],
) -> Any:
    """Split `split` of a local folder, read again from its own files when they (parquet, arrow)
    carry ClassLabel names other than the loaded ones: `load_dataset` casts every split to the
    first split's features, so a validation file whose ClassLabel listed the classes in another
    order had them swapped, without a word."""
    datasets = import_datasets()
    named = split.partition("[")[0]  # `validation[:50%]`: a slice of the validation files
    if "+" in named or not files.get(named):
        return dataset
    features = [_file_features(f) for f in files[named]]
    labels = [
        {c: f for c, f in own.items() if isinstance(f, datasets.ClassLabel)}
        for own in features
        if own is not None
    ]
    if any(other != labels[0] for other in labels[1:]):  # each cast to the first's names
        raise SFTError(
            f"{name}: the files of split {named!r} record different class lists for the same "
            "columns; write them with one ClassLabel"
        )
    if not labels or labels[0] == {
        c: f for c, f in dataset.features.items() if c in labels[0] and c in dataset.features
    }:
        return dataset
    return datasets.load_dataset(
        name, config, split=split, data_files={named: list(files[named])}, **kwargs
    )


def _file_features(path: str) -> Any:
    """The `datasets` features a parquet or arrow file's schema records; None for other files
    (CSV, JSON: their columns carry no class names)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.endswith(".parquet"):
        schema = pq.read_schema(path)
    elif path.endswith(".arrow"):
        try:  # datasets writes arrow streams; its arrow builder reads files too
            schema = pa.ipc.open_stream(path).schema
        except pa.ArrowInvalid:
            schema = pa.ipc.open_file(path).schema
    else:
        return None
    return datasets.Features.from_arrow_schema(schema)


NAME_THE_SPLITS = (
    "name the dataset's splits with data.train_split, data.val_split and data.test_split "
    "(data.test_split=null: none)"
)
# what DatasetDict.save_to_disk and Dataset.save_to_disk write in their folder
SAVED_SPLITS, SAVED_DATASET = "dataset_dict.json", "state.json"


def load_saved_split(folder: Path, name: str, config: str | None, split: str) -> Any:
    """Split `split` of a folder written by `save_to_disk`, read by `datasets.load_from_disk`
    with its own features: `load_dataset` casts every split to the first one's (a validation
    split whose ClassLabel lists the classes in another order had its classes swapped, without
    a word; other columns failed with a wall of datasets' errors, blamed on the train split)."""
    datasets = import_datasets()
    if config:
        raise SFTError(
            f"data.dataset_config={config}: {name} is a folder written by save_to_disk, which "
            "has no configurations: leave data.dataset_config null"
        )
    try:
        saved = datasets.load_from_disk(str(folder))
    except Exception as e:  # a folder save_to_disk did not finish, or a datasets too old
        reason = " ".join(str(e).split())[:200]
        raise SFTError(f"could not read {name} with datasets.load_from_disk ({reason})") from None
    if not isinstance(saved, datasets.DatasetDict):
        raise SFTError(
            f"{name} holds one Dataset (Dataset.save_to_disk), without splits: save its splits "
            "together, DatasetDict(train=..., validation=...).save_to_disk(...)"
        )
    if split not in saved:
        raise SFTError(
            f"{name} has no split {split!r} (its splits: {', '.join(saved)}); {NAME_THE_SPLITS}"
        )
    return saved[split]


# the file-format builders of datasets.packaged_modules (its list is private)
FILE_BUILDERS = frozenset(
    ("arrow", "csv", "json", "pandas", "parquet", "text", "xml", "webdataset", "imagefolder")
)


def is_file_builder(name: str) -> bool:
    """Whether `name` is one of datasets' packaged builders for local files (csv, json, text,
    parquet, imagefolder, ...) rather than a dataset (a local folder of that name is one)."""
    return name in FILE_BUILDERS and not expand_home(name).exists()


def import_datasets() -> Any:
    """The `datasets` package; one line when it is not installed (was: a traceback)."""
    try:
        import datasets
    except ImportError as exc:
        raise SFTError(
            "data=hf_dataset reads Hugging Face datasets with the 'datasets' package, which is "
            "not installed: pip install 'sft[text]'"
        ) from exc
    return datasets


@contextlib.contextmanager
def datasets_offline(offline: bool) -> Iterator[None]:
    """`datasets` in its offline mode (HF_HUB_OFFLINE=1, which it reads once, at import) while
    loading, when `offline`."""
    datasets = import_datasets()

    before = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = before


def hf_label_names(dataset: Any, label_column: str | None) -> list[str] | None:
    """Class names of a `ClassLabel` label column, if it is one."""
    feature = dataset.features.get(label_column) if label_column else None
    return list(feature.names) if getattr(feature, "names", None) else None


def read_hf_split(
    dataset: Any,
    where: str,
    text_column: str,
    pair_column: str | None,
    label_column: str | None,
    label_map: LabelMap,
    need_labels: bool,
    class_names: list[str] | None = None,
) -> TextExamples:
    """Columns of a loaded HF split; `lines` are row numbers, from 0 as `dataset[i]` counts
    them (sft-eval's predictions.csv ids; GLUE's idx). Negative labels (GLUE test splits
    use -1) = unlabelled, unless labels are required (`LabelMap.marks_unlabelled`).
    `class_names`: the split's `ClassLabel` names; its labels are positions in them, read as
    those names (was: as positions in `label_map`'s names, so data.label_names in another
    order, or a split whose ClassLabel lists the classes in another order, swapped classes
    without a word)."""
    columns = list(dataset.column_names)
    labelled = need_labels or label_column in columns
    check_columns(where, [text_column, pair_column, label_column if labelled else None], columns)
    count = len(dataset)
    texts = dataset[text_column]
    pairs = dataset[pair_column] if pair_column else [None] * count
    values = dataset[label_column] if labelled else [None] * count
    out = TextExamples(pairs=[] if pair_column else None)
    for row, (text, pair, value) in enumerate(zip(texts, pairs, values, strict=True)):
        text, pair = (
            _text(where, row, column, v) for column, v in ((text_column, text), (pair_column, pair))
        )
        if not labelled or (not need_labels and label_map.marks_unlabelled(value)):
            label = UNLABELLED
        else:
            index = as_int(value)
            if class_names is not None and index is not None and 0 <= index < len(class_names):
                value = class_names[index]
            label = label_map(value, f"{where}, row {row}")
        out.add(text, label, row, pair)
    return out


def _text(where: str, row: int, column: str | None, value: Any) -> str | None:
    """A text cell: None (an empty CSV cell) is an empty text, as in sft's other readers (was:
    the text "None"); anything but a string is an error (was: a list's repr, as text)."""
    if column is None:
        return None
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SFTError(
            f"{where}, row {row}: {column!r} must be a string, got {type(value).__name__}"
        )
    return value


class HFReader(TextReader):
    """Splits of a Hugging Face dataset: `data.train_split` etc. are its split names. Options
    `data.dataset_name` (required), `data.dataset_config`. Without `data.label_names`, the
    classes are the names of a `ClassLabel` label column."""

    source = "hf"
    options = ("dataset_name", "dataset_config")
    row_kind = "rows"

    def __init__(
        self,
        settings: ReaderSettings,
        dataset_name: str | None = None,
        dataset_config: str | None = None,
    ) -> None:
        super().__init__(settings)
        if not dataset_name:
            raise SFTError("data.source=hf needs data.dataset_name (e.g. stanfordnlp/sst2)")
        if is_file_builder(dataset_name):
            # datasets' builder for files of a format: without data_files (sft passes none) it
            # reads every matching file under the current folder (was: a decode error of
            # whatever lay there, blamed on the offline cache)
            raise SFTError(
                f"data.dataset_name={dataset_name} is datasets' reader of {dataset_name} files, "
                "which sft does not hand files to: read your own files with data=text_files "
                "data.data_dir=<folder> data.source=tsv|csv|jsonl data.train_split=<file> "
                "data.val_split=<file>"
            )
        self.dataset_name, self.dataset_config = dataset_name, dataset_config
        self._datasets: dict[str, Any] = {}  # split name -> loaded split

    def dataset(self, role: str) -> Any:
        """The loaded HF split of `role` (loaded once)."""
        split = self.settings.splits[role]
        if split not in self._datasets:
            s = self.settings
            columns = [c for c in (s.text_column, s.text_pair_column, s.label_column) if c]
            self._datasets[split] = load_hf_split(
                self.dataset_name, self.dataset_config, split, s.trust_remote_code, columns
            )
        return self._datasets[split]

    def where(self, role: str) -> str:
        return f"{self.dataset_name}[{self.settings.splits[role]}]"

    def label_map(self) -> LabelMap:
        names = self.settings.label_names
        if names is None:
            names = hf_label_names(self.dataset("train"), self.settings.label_column)
        return LabelMap(names)

    def read(self, role: str) -> TextExamples:
        label_column, need = self.label_mode(role)
        s = self.settings
        dataset = self.dataset(role)
        label_map = self.label_map()
        # a ClassLabel column holds positions in its names (["1", ..., "5"] stars too): read as
        # those names when they are among the classes (a test split may lack some); other names
        # for all of them rename the classes
        split_names = hf_label_names(dataset, label_column)
        names = label_map.names
        if split_names is not None and names is not None and not set(split_names) <= set(names):
            split_names = self._renamed(role, split_names, names)
        return read_hf_split(
            dataset,
            self.where(role),
            s.text_column,
            s.text_pair_column,
            label_column,
            label_map,
            need,
            split_names,
        )

    def _renamed(self, role: str, split_names: list[str], names: list[str]) -> list[str]:
        """Split `role`'s ClassLabel names as data.label_names `names` rename them: by each
        class's position in the training split's ClassLabel (was: in the split's own, so a
        validation split listing the classes in another order had them swapped, without a
        word)."""
        where = self.where(role)
        if self.settings.label_names is None:  # the classes are the training split's names
            extra = [n for n in split_names if n not in names]
            raise SFTError(
                f"the ClassLabel of {where} names classes that the training split's, {names}, "
                f"does not have: {extra}"
            )
        if set(names) & set(split_names):
            raise SFTError(
                f"data.label_names={names} and the ClassLabel names of {where}, "
                f"{split_names}, share some names but not all: give the ClassLabel's names "
                "(in the order the model's outputs should have), or other names for every "
                "class (they rename the training split's ClassLabel classes in its order)"
            )
        train_names = self._training_classlabel()
        if train_names is None and len(split_names) == len(names):
            # sft-eval of a dataset without the training split: the split's own order
            log.warning(
                f"{where}: data.label_names={names} renames its ClassLabel classes "
                f"{split_names} in that order (no training split to take the order from)"
            )
            return names
        if train_names is None or len(train_names) != len(names):
            raise SFTError(
                f"data.label_names={names} renames the classes of the training split's "
                f"ClassLabel, {train_names}: give one name for each of them, in its order"
            )
        extra = [n for n in split_names if n not in train_names]
        if extra:
            raise SFTError(
                f"the ClassLabel of {where} names classes that the training split's, "
                f"{train_names}, does not have: {extra}"
            )
        return [names[train_names.index(n)] for n in split_names]

    def _training_classlabel(self) -> list[str] | None:
        """The training split's ClassLabel names; None without one, or without a training
        split to read (sft-eval of another dataset)."""
        if not self.settings.splits.get("train"):
            return None
        try:
            return hf_label_names(self.dataset("train"), self.settings.label_column)
        except SFTError:
            return None

    def cache_name(self, role: str) -> str:
        return f"{self.dataset_name.replace('/', '_')}-{role}"

    def content_key(self, role: str) -> dict[str, Any]:
        # datasets' fingerprint identifies the loaded split's content
        return {"dataset": self.where(role), "fingerprint": self.dataset(role)._fingerprint}
