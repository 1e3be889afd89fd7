"""Text readers, one class per `data.source` (as timm's `create_reader` + `reader_*.py`).

    tsv, csv   table.py      a header row, then one example per row
    jsonl      jsonl.py      one JSON object per line
    sst_trees  sst_trees.py  SST PTB trees (SST-5, or binary with data.binary)
    hf         hf.py         a Hugging Face `datasets` dataset

`create_reader` picks the class by `data.source`; each class takes the settings every source
shares (`ReaderSettings`) plus its own options (`TextReader.options`: data.quoting, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sft.data.readers.base import ReaderSettings, TextReader
from sft.data.readers.hf import HFReader
from sft.data.readers.jsonl import JsonlReader
from sft.data.readers.sst_trees import SSTTreesReader
from sft.data.readers.table import CsvReader, TsvReader
from sft.errors import SFTError

READERS: dict[str, type[TextReader]] = {
    reader.source: reader
    for reader in (TsvReader, CsvReader, JsonlReader, SSTTreesReader, HFReader)
}


def create_reader(source: str, settings: ReaderSettings, options: Mapping[str, Any]) -> TextReader:
    """The reader of `source` (data.source). `options`: every source's own data.* keys; the
    reader takes its own, the others must stay unset where they are flags."""
    reader_cls = READERS.get(source)
    if reader_cls is None:
        raise SFTError(f"data.source must be one of {', '.join(READERS)}, got {source!r}")
    # A flag of another source (data.binary on a TSV) would silently train on other data than
    # asked. Other sources' values are ignored: shared configs and old checkpoints carry them
    # (conf/data/sst2.yaml's quoting under data.source=jsonl).
    flags = [
        key for key, value in options.items() if value is True and key not in reader_cls.options
    ]
    if flags:
        owners = [r.source for r in READERS.values() if set(flags) & set(r.options)]
        verb = "apply" if len(flags) > 1 else "applies"
        raise SFTError(
            f"{' and '.join(f'data.{k}' for k in flags)} {verb} to "
            f"data.source={'/'.join(owners)} only, not {source}"
        )
    return reader_cls(settings, **{key: options[key] for key in reader_cls.options})


__all__ = ["READERS", "ReaderSettings", "create_reader"]
