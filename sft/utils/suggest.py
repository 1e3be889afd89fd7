"""'did you mean ...?': the names nearest a mistyped one."""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Sequence


def nearest_names(given: str, names: Sequence[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Up to `n` of `names` for a mistyped `given`: the names it begins (`lr` -> lr_head,
    lr_backbone, lr_adapter), after a name it is with a stray `_`, `.` or `-` or two
    (`cifar10_effnet_lite0_`) and before one with other characters (`ddp_s`: ddp_sim, ddp);
    else difflib's closest name, or, where some close names share a longer beginning with
    `given` (two letters or more), those. difflib's closest alone offered cifar10_resnet18 for
    `cifar10_efnet` and lr_head alone for `lr`."""
    names = list(dict.fromkeys(names))
    # (of a dotted key, the last part's length: `adapter.r` is a short name)
    typed_on = [
        m
        for m in names
        if given.startswith(m) and len(given) - len(m) in (1, 2) and len(m.split(".")[-1]) > 2
    ]
    begun = sorted((m for m in names if m.startswith(given) and m != given), key=len)
    stray = {m: not given[len(m) :].strip("_.-") for m in sorted(typed_on, key=len, reverse=True)}
    ranked = [m for m in stray if stray[m]] + begun + [m for m in stray if not stray[m]]
    if ranked:
        return ranked[:n]
    close = difflib.get_close_matches(given, names, n=len(names), cutoff=cutoff)
    if not close:
        return []
    longer = [
        m for m in close if _shared_beginning(given, m) >= _shared_beginning(given, close[0]) + 2
    ]
    return (longer or close[:1])[:n]


def _shared_beginning(a: str, b: str) -> int:
    return len(list(itertools.takewhile(lambda pair: pair[0] == pair[1], zip(a, b, strict=False))))


def did_you_mean(quoted: Sequence[str]) -> str:
    """`did you mean 'a', 'b' or 'c'?` for names already written as shown."""
    listed = ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]
    return f"did you mean {listed}?"
