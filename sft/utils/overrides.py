"""An override as text: its key, how a value is quoted, what a mistaken one raises, and the
rewrites of the command line before Hydra parses it (any Lightning Trainer argument, a
checkpoint's data settings, `-m` first). Imports no torch or Lightning."""

import ast
import difflib
import functools
import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException


class OverrideMistake(Exception):
    """A command-line override that cannot compose, described in one line."""


SEARCH_SPACE = "hydra.sweeper.params"


# the functions of Hydra's override grammar (and its sweepers'), which a value may call
HYDRA_FUNCTIONS = (
    "choice", "range", "interval", "tag", "glob", "sort", "shuffle",
    "int", "float", "str", "bool", "json_str", "extend_list",
)  # fmt: skip


# characters Hydra's override grammar refuses in a plain value (`~/data`: a home folder; was
# no hint for ~ ! # ^ & ; < > `)
QUOTED = "()[]{}=:~!#^&;<>`"


PATH_STARTS = ("/", "~", ".")


# a key as overrides write it: `+`/`++`/`~` before it, groups with `/` and `@` (hydra/sweeper)
OVERRIDE_KEY = r"(?:\+{1,2}|~)?[\w.@/-]+"


def spacing_hint(override: str, given: Sequence[str] = ()) -> str:
    """A hint for an override with spaces Hydra's grammar takes as its end: several overrides
    in one argument (a quoted "$ARGS"), or a space around `=`, in it or between it and its
    neighbours among the arguments `given` (`key = 3` unquoted: three arguments) (were: told
    to quote the value, which made the rest of the argument a string, or the grammar's
    LexerNoViableAltException, or "Error parsing override" alone)."""
    if override in given:
        at = list(given).index(override)
        before, after = given[at - 1] if at else "", list(given[at + 1 : at + 3])
        joined = None
        if "=" not in override and after[:1] == ["="] and len(after) == 2:
            joined = f"{override}={after[1]}"
        elif "=" not in override and after and after[0].startswith("="):
            joined = override + after[0]
        elif before.endswith("=") and "=" not in override:
            joined = before + override
        if joined and re.fullmatch(rf"{OVERRIDE_KEY}=\S+", joined) and _parses([joined]):
            return f"; no spaces around '=': {as_typed([joined])[0]}"
    words = override.split()
    plain = [rf"{OVERRIDE_KEY}=\S*", r"~[\w.@/-]+"]
    if (
        len(words) > 1
        and all(any(re.fullmatch(p, w) for p in plain) for w in words)
        and _parses(words)
    ):
        return (
            f"; it holds {len(words)} overrides: give each as an argument of its own "
            f"({' '.join(words)}, not in one pair of quotes)"
        )
    key, sep, value = override.partition("=")
    spaced = key != key.rstrip() or value != value.lstrip()
    unspaced = f"{key.strip()}={value.strip()}"
    if sep and spaced and re.fullmatch(OVERRIDE_KEY, key.strip()) and _parses([unspaced]):
        return f"; no spaces around '=': {unspaced}"
    return ""


def _parses(overrides: list[str]) -> bool:
    """Whether Hydra's grammar reads each of `overrides` (a hint's fix must be one)."""
    try:
        OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:
        return False
    return True


def quoting_hint(override: str) -> str:
    """How to quote a value that holds characters of Hydra's override grammar, a file name
    such as `my reviews (1).csv` or `a=b.csv`; not for a list, a dict or a sweep function."""
    key, sep, value = override.partition("=")
    called = re.fullmatch(r"\s*(\w+)\(.*\)\s*", value)  # the whole value, not train(1).csv
    if sep and called and called.group(1) not in HYDRA_FUNCTIONS:
        # `intervall(1e-5,1e-3)`: quoting it would make the value a string
        close = difflib.get_close_matches(called.group(1), HYDRA_FUNCTIONS, n=1)
        if close:
            return (
                f"; {called.group(1)}(...) is no function of Hydra's: did you mean {close[0]}(...)?"
            )
    if (
        not sep
        or any(q in value for q in "'\"")
        or re.match(rf"\s*(\[|\{{|({'|'.join(HYDRA_FUNCTIONS)})\()", value)
    ):
        return ""
    if not value.isascii():  # Hydra's grammar leaves letters beyond ASCII (café, 日本) unquoted
        # a sweep's values each (one quote around `café,thé` would make them one value); in a
        # path, a comma followed by no path of its own is the path's (was: split in two)
        values = value.split(",")
        if value.startswith(PATH_STARTS) and not all(v.startswith(PATH_STARTS) for v in values):
            values = [value]
        quoted = ",".join(f"'{v}'" for v in values)
        return f'; a value with letters beyond ASCII is quoted: "{key}={quoted}"'
    if not any(c in value for c in QUOTED):
        return ""
    return f"; a value with any of {' '.join(QUOTED)} is quoted: \"{key}='{value}'\""


def quoted_list_override(key: str, names: Sequence[str]) -> str:
    """`'key=["a","b"]'`: a list of names as the command line takes it, each one quoted (`1`,
    `true` and `null` unquoted are values, not names) and the whole quoted for the shell."""
    return f"'{key}=[{','.join(json.dumps(str(n)) for n in names)}]'"


def override_key(override: str) -> str:
    """The key an override sets: `++trainer.x=1`, `~model.y`, `a.b=1,2` -> `trainer.x`, ..."""
    return override.lstrip("+~").partition("=")[0]


@functools.cache
def trainer_arguments() -> frozenset[str]:
    """The keyword arguments of Lightning's `Trainer`, read from its source: importing Lightning
    takes about 10 s (torchmetrics, torchvision, transformers, scipy), and these checks answer a
    mistaken override before it loads. Imported and inspected if the source reads otherwise."""
    spec = importlib.util.find_spec("lightning")  # a top-level name: this imports nothing
    origin = spec.origin if spec else None
    source = Path(origin).parent / "pytorch" / "trainer" / "trainer.py" if origin else None
    if source and source.is_file():
        for node in ast.parse(source.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name == "Trainer":
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                        args = [*item.args.args, *item.args.kwonlyargs]
                        return frozenset(a.arg for a in args) - {"self"}
    import inspect

    from lightning.pytorch import Trainer

    return frozenset(inspect.signature(Trainer.__init__).parameters) - {"self"}


TRAINER_OVERRIDE = re.compile(r"^trainer\.([A-Za-z_]\w*)=")


def accept_trainer_arguments(argv: Sequence[str]) -> list[str]:
    """`trainer.<Trainer argument>=v` -> `++trainer.<argument>=v`: every argument of Lightning's
    Trainer is settable as Lightning users type it (`trainer.fast_dev_run=true`), whether or not
    conf/trainer lists it; `++` sets a key that exists and adds one that does not."""
    return [f"++{arg}" if _is_trainer_argument(arg) else arg for arg in argv]


DATA_SETTING = re.compile(r"^data\.[A-Za-z_][\w.]*=")


DATA_CHOSEN = re.compile(r"^[+~]*data=")


PRIMARY_CONFIG_FLAGS = ("--config-name", "-cn", "--config-path", "-cp")


def accept_checkpoint_data_settings(argv: Sequence[str], adds: Sequence[str] | None) -> list[str]:
    """`data.<key>=v` -> `+data.<key>=v` in a command that reads the checkpoint's data (`data.`
    among `adds`: sft-eval, sft-predict, sft-export) and is given no `data=`: the setting
    changes the checkpoint's data config, which Hydra has not composed (was: Hydra's "Could not
    override", then an error line asking for the `+`; sft's own hints, e.g. "set
    data.text_column", named the key without it)."""
    takes_data = any(a.rstrip(".") == "data" for a in adds or ())
    # a primary config of the user's own (--config-name) may compose data itself: as typed
    own_config = any(arg.partition("=")[0] in PRIMARY_CONFIG_FLAGS for arg in argv)
    if not takes_data or own_config or any(DATA_CHOSEN.match(arg) for arg in argv):
        return list(argv)
    return [f"+{arg}" if DATA_SETTING.match(arg) else arg for arg in argv]


def as_typed(overrides: Sequence[str]) -> list[str]:
    """The overrides as the user typed them (for result.json and sweep summaries): without the
    `++` that `accept_trainer_arguments` put before Trainer arguments, and as written before
    Hydra's basic sweeper wrote each job's anew (`~key` as `~key=null`, `false` as `False`)."""
    typed = []
    for override in overrides:
        if override.startswith("++") and _is_trainer_argument(override[2:]):
            override = override[2:]
        key, _, value = override.partition("=")
        if key.startswith("~") and value == "null":
            override = key
        elif value in ("True", "False"):
            override = f"{key}={value.lower()}"
        typed.append(override)
    return typed


def _is_trainer_argument(arg: str) -> bool:
    match = TRAINER_OVERRIDE.match(arg)
    # one that does not parse is reported as the user typed it
    return bool(match) and match.group(1) in trainer_arguments() and _parses([arg])


MULTIRUN_FLAGS = ("-m", "--multirun")


def multirun_flag_first(argv: Sequence[str]) -> list[str]:
    """`-m` among the overrides moved before them: Hydra's parser takes the overrides as one
    positional list, so `a=1 -m b=1,2` was argparse's usage block ("unrecognized arguments")."""
    return sorted(argv, key=lambda arg: arg not in MULTIRUN_FLAGS)  # stable: order kept
