"""Which files of a user's folder are images, a warning naming those a folder holds but the data
leaves out (torchvision's ImageFolder skips them without a word), and one for an image file that
a link makes appear twice."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from torchvision.datasets.folder import IMG_EXTENSIONS

from sft.errors import SFTError
from sft.utils.logs import rank_zero_warning

log = logging.getLogger(__name__)


def is_image(path: Path) -> bool:
    """An image by its name, as torchvision's ImageFolder decides."""
    return path.suffix.lower() in IMG_EXTENSIONS


def is_hidden(name: str) -> bool:
    """.DS_Store, .ipynb_checkpoints/, AppleDouble ._x.jpg, the __MACOSX/ folder macOS puts in
    its zip files: the file system's, not data."""
    return name.startswith(".") or name == "__MACOSX"


def visible_image(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """An image file under `root` with no hidden file or folder on its way there."""
    parts = Path(path).relative_to(root).parts
    return is_image(Path(path)) and not any(is_hidden(part) for part in parts)


def visible_files(root: Path, walk_hidden: bool = False) -> list[Path]:
    """Every file under `root` (following links, as ImageFolder does), sorted, without hidden
    files and folders: .DS_Store and the like are the file system's, not the user's data.
    `walk_hidden`: walk hidden folders all the same (ImageFolder does, and leaves their files
    out). SFTError for a folder link back into its own path or above `root` (`ln -s .. up`):
    followed, it would list the tree again and again (under the wrong class folder)."""
    found = []
    # each folder's real path and those of the folders above it, to spot a link into them;
    # above `root` too: a link there leads back down into it
    real_root = Path(os.path.realpath(root))
    above: dict[str, frozenset[str]] = {str(root): frozenset(map(str, real_root.parents))}
    for folder, dirs, files in os.walk(root, followlinks=True):
        on_path = above.pop(folder) | {os.path.realpath(folder)}
        if not walk_hidden:
            dirs[:] = [d for d in dirs if not is_hidden(d)]
        for d in dirs:
            sub = os.path.join(folder, d)
            if os.path.realpath(sub) in on_path:
                raise SFTError(
                    f"{sub} links to {os.path.realpath(sub)}, a folder on its own path: "
                    "following it would list those images again without end; remove the link"
                )
            above[sub] = on_path
        if not any(is_hidden(part) for part in Path(folder).relative_to(root).parts):
            found += [Path(folder, f) for f in files if not is_hidden(f)]
    return sorted(found)


@rank_zero_only  # every DDP rank opens the folders; one warning
def warn_left_out(
    root: Path, used: Iterable[str | os.PathLike], class_folders: bool, files: list[Path]
) -> None:
    """A warning naming the files under `root` (`files`: its `visible_files`) that are not
    among `used`, and why: not an image by its extension, or (`class_folders`) an image outside
    a class folder."""
    used = {os.path.normpath(p) for p in used}
    left_out = [p for p in files if os.path.normpath(p) not in used]
    if not left_out:
        return

    shown = "; ".join(
        f"{p} ({'not in a class folder' if is_image(p) else _unread_kind(Path(p))})"
        for p in left_out[:3]
    )
    more = f"; and {len(left_out) - 3} more" if len(left_out) > 3 else ""
    files = "1 file" if len(left_out) == 1 else f"{len(left_out)} files"
    log.warning(
        f"{files} under {root} not used: {shown}{more} (images: "
        f"{', '.join(IMG_EXTENSIONS)}" + (", each in its class folder)" if class_folders else ")")
    )


def _unread_kind(path: Path) -> str:
    """Why a file is not read as an image: its extension (a .gif is an image, but not one the
    list of extensions holds)."""
    return f"extension {path.suffix} not read" if path.suffix else "no extension"


FileId = tuple[int, int]  # (device, inode): one file, whatever links or hard links name it


def file_ids(paths: Sequence[str]) -> list[FileId | None]:
    """Each file's identity (None where the file system gives no inode numbers: 0), stat-ed
    by threads: one round trip per file adds up on a network file system."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        stats = list(pool.map(os.stat, paths, chunksize=256))
    return [(st.st_dev, st.st_ino) if st.st_ino else None for st in stats]


def warn_repeated_files(paths: Sequence[str], root: Path) -> set[FileId]:
    """The identities of `paths` (the images of the training folder `root`), with a warning
    when a link names one file twice (`ln -s cat train/kitty`): it trains twice, and under
    another class folder with both labels."""
    first: dict[FileId, str] = {}
    twice = []
    for path, key in zip(paths, file_ids(paths), strict=True):
        if key is not None and first.setdefault(key, path) != path:
            twice.append((first[key], path))
    if twice:
        rank_zero_warning(
            log,
            (
                f"{len(twice)} images under {root} are files it already holds"
                if len(twice) > 1
                else f"1 image under {root} is a file it already holds"
            )
            + f" through a link (e.g. {_one_file(*twice[0], root)}): each of them trains twice, under "
            "the label of each class folder that holds it",
        )
    return set(first)


def _one_file(a: str, b: str, root: Path) -> str:
    """Two paths of one file under `root`, the link named as such (was: in path order, so that
    the real file could be named as the link: deleting it leaves the link dangling). A link
    above `root` (a linked data folder, macOS's /var) makes neither path one."""
    real_root = os.path.realpath(root)
    linked = [
        p
        for p in (a, b)
        if os.path.realpath(p) != os.path.join(real_root, os.path.relpath(p, root))
    ]
    if len(linked) == 1:
        return f"{linked[0]} is a link to {os.path.realpath(linked[0])}"
    return f"{a} and {b} are one file"


def warn_files_of_training(
    paths: Sequence[str], root: Path, training: set[FileId], split: str
) -> set[FileId]:
    """A warning when images of the `split` folder `root` are files of the training folder
    (`training`: `warn_repeated_files`' answer), reached through a link (`ln -s train val`): the
    scores of that split would be on images the model trains on. Returns the identities of
    `paths`, for a later split to be checked against."""
    ids = file_ids(paths)
    consequence = f"{split} scores images the model trains on"
    warn_shared_files(paths, ids, root, training, "the training folder", consequence)
    return {key for key in ids if key is not None}


def warn_shared_files(
    paths: Sequence[str],
    ids: Sequence[FileId | None],
    root: Path,
    others: set[FileId],
    of: str,
    consequence: str,
) -> None:
    """A warning when images under `root` (`ids`: `file_ids(paths)`) are files of another
    folder (`of`, `others`: its files' identities), and what follows from it."""
    shared = [p for p, key in zip(paths, ids, strict=True) if key in others]
    if shared:
        rank_zero_warning(
            log,
            f"{len(shared)} of the {len(paths)} images under {root} are files of {of} "
            f"(e.g. {shared[0]}): {consequence}",
        )
