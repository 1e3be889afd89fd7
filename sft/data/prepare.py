"""Build the data root from a local copy of the datasets (`make data`).

    python -m sft.data.prepare --data-dir $SFT_DATA_DIR --shared ../shared/data

CIFAR-10: runs the copy's `cifar10/prepare.py` to write the official python layout (and the
image-folder tree) under the data root. Text datasets: linked, not copied. Without a local copy
nothing is done: the CIFAR-10 datamodule downloads the official archive on first use.
"""

import argparse
import subprocess
import sys
from pathlib import Path

from sft.data.sources import SOURCES

LINKED = ("sst2", "sst")


def prepare(data_dir: Path, shared: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if not shared.is_dir():
        print(f"no local dataset copy at {shared}: CIFAR-10 will be downloaded on first use")
        for name in LINKED:
            if not (data_dir / name).is_dir():
                print(f"no {data_dir / name}: to get it, {SOURCES[name]}")
        return
    cifar_ready = (data_dir / "cifar-10-batches-py" / "test_batch").is_file()
    folder_ready = (data_dir / "cifar10-images" / "test").is_dir()
    if not (cifar_ready and folder_ready):
        script = shared / "cifar10" / "prepare.py"
        print(f"writing CIFAR-10 under {data_dir} ...")
        subprocess.run([sys.executable, str(script), str(data_dir), "--folder"], check=True)
    for name in LINKED:
        source, link = shared / name, data_dir / name
        if source.is_dir() and not link.exists():
            link.symlink_to(source.resolve(), target_is_directory=True)
    print(f"data root ready: {data_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--shared", type=Path, required=True)
    args = parser.parse_args()
    prepare(args.data_dir, args.shared)


if __name__ == "__main__":
    main()
