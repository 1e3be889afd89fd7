"""Images/s of the CIFAR-10 training input pipeline: ours vs torchvision's per-sample PIL one.

    .venv/bin/python benchmarks/augmentation.py [--data-dir data] [--images-per-class 1500]

(a) ours: CIFAR10DataModule train loader (one tensor index per batch, main process) followed by
    `transform_batch(train=True)` (batched crop+flip+normalise) on the CPU.
(b) torchvision: a Dataset over the same uint8 images yielding PIL images ->
    RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, DataLoader with
    batch_size=128, num_workers=2, shuffle=True (persistent workers, so worker start-up after the
    warm-up epoch is not counted: the baseline's best case).
Both get one untimed warm-up epoch, then `--epochs` timed epochs over the same training subset.
(a) runs with `--threads` torch threads (default 1, i.e. one core against (b)'s two workers).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from sft.contracts import CIFAR10
from sft.data import CIFAR10DataModule


class PILCIFAR(Dataset):
    """The classic per-sample pipeline: one PIL image and one transform call per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()  # HWC for PIL
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def images_per_second(loader: Iterable, step: Callable, epochs: int) -> float:
    for batch in loader:  # warm-up epoch: workers, allocator, caches
        step(batch)
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            x, _ = step(batch)
            n += x.shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("SFT_DATA_DIR", "data"))
    ap.add_argument("--images-per-class", type=int, default=1500, help="training subset size / 10")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per pipeline")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads of the main process (0: torch's default). (a) runs in the "
        "main process, so 1 gives it one core against (b)'s two workers; on a loaded 2-core "
        "machine torch's 2 OpenMP threads are many times slower than 1",
    )
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    dm = CIFAR10DataModule(
        str(Path(args.data_dir)),
        batch_size=args.batch_size,
        samples_per_class=args.images_per_class,
        download=False,
    )
    dm.setup("fit")
    images, labels = dm.train_data.tensors

    ours = images_per_second(
        dm.train_dataloader(), lambda b: dm.transform_batch(b, train=True), args.epochs
    )

    tv_transform = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(CIFAR10.mean, CIFAR10.std),
        ]
    )
    tv_loader = DataLoader(
        PILCIFAR(images, labels, tv_transform),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=2,
        persistent_workers=True,
    )
    tv = images_per_second(tv_loader, lambda b: b, args.epochs)

    print(
        f"train images {len(images)}, timed epochs {args.epochs}, batch {args.batch_size}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"load avg {os.getloadavg()[0]:.2f}"
    )
    print(f"(a) sft batched on-device pipeline : {ours:10.0f} images/s")
    print(f"(b) torchvision PIL, 2 workers     : {tv:10.0f} images/s")
    print(f"speed-up (a)/(b)                   : {ours / tv:10.1f}x")


if __name__ == "__main__":
    main()
