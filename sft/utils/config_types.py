"""Config values checked against the type hints of the callables they are handed to.

Before anything is built, a key the `_target_` does not take is named (one line, with the
closest parameter), and every plain value of a `_target_` config node is validated with
pydantic against the annotation of the parameter it fills (`TypeAdapter`, lax mode: `1` is a
valid float, `'abc'` and `1.5` are not an int; a bool takes only true or false), so
`model.lr_backbone=abc` reads as "model.lr_backbone: expected a float >= 0, got 'abc'" instead
of a TypeError deep inside. Bounds travel in the annotation (`Annotated[float, Ge(0)]`, here or
in `_MISSING_BOUNDS` for third-party callables), and a `_target_` that cannot be imported is
named, as is an interpolation of a setting the config lacks. Values that are themselves configs
(`_target_` dicts) and parameters without an annotation pydantic understands are left to the
callable.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import itertools
import pydoc
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval
from hydra.utils import get_object
from lightning.pytorch import Trainer
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from pydantic import ConfigDict, TypeAdapter, ValidationError

from sft.errors import SFTError
from sft.utils.composition_errors import unresolvable_message
from sft.utils.overrides import quoted_list_override

_NAMES = {float: "a float", int: "an integer", bool: "true or false", str: "a string"}

# Bounds a parameter's annotation carries: checked with its type, and said in the error
# ("expected a float >= 0")
NonNegative = Annotated[float, Ge(0)]
Fraction = Annotated[float, Interval(ge=0, le=1)]
# what seed_everything takes (numpy's seed range); -1 is not "random" there but a ValueError
Seed = Annotated[int, Interval(ge=0, le=2**32 - 1)] | None

# Bounds that third-party signatures do not state: Lightning builds a trainer with these values
# and divides by them once training runs (a ZeroDivisionError mid-epoch).
_MISSING_BOUNDS: dict[Any, dict[str, Any]] = {
    Trainer: {
        # or a time ("DD:HH:MM:SS", {minutes: 5}), Lightning 2.6's validation by wall time
        "val_check_interval": Annotated[float, Gt(0)] | str | dict | None,
        "check_val_every_n_epoch": Annotated[int, Ge(1)] | None,
        # 0: a ZeroDivisionError in the schedule's step count; < 0 trains as its absolute value
        "accumulate_grad_batches": Annotated[int, Ge(1)],
        # < 0: Lightning clips only above 0, so it trained unclipped without a word
        "gradient_clip_val": NonNegative | None,
        # sft's own value, the hardware's pick, made before Lightning sees the setting
        "precision": typing.get_type_hints(Trainer.__init__)["precision"] | Literal["auto"],
    },
}


def number_list(value: object) -> object:
    """A config's list of numbers as a plain list of floats (hparams that checkpoints keep must
    not be ListConfig); anything else as it is, for the checks to name."""
    if isinstance(value, ListConfig | list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        return [float(v) for v in value]
    return value


def check_has_target(node: DictConfig | Mapping | None, where: str, example: str) -> None:
    """SFTError when the config `node` (of `where`) names no class to build: Hydra returns it
    as it is, and what reads it then failed far from the mistake (a model config without one:
    "Missing key input_spec")."""
    if isinstance(node, DictConfig | Mapping) and "_target_" not in node:
        raise SFTError(
            f"{where}: no _target_ (the class to build, e.g. {example}); a config of your own "
            "that extends one of sft's lists it in its defaults"
        )


def _not_found(target: str) -> str:
    """Why the dotted path `target` names nothing: its first module is not importable (a module
    of the user's own, without PYTHONPATH), or the part found has no such attribute."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            owner = pydoc.locate(".".join(parts[:i]))
        except pydoc.ErrorDuringImport:
            owner = None
        if owner is not None:
            name = parts[i]
            close = difflib.get_close_matches(name, [n for n in dir(owner) if n[0] != "_"], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            return f"{'.'.join(parts[:i])} has no {name!r}{hint}"
    if len(parts) > 1:
        return (
            f"no module named {parts[0]!r}: a module of your own is imported from the folders "
            f"of PYTHONPATH (from its folder: PYTHONPATH=. sft-...), or install it"
        )
    return "expected the dotted path of a class or function (e.g. torch.optim.AdamW)"


def check_config_types(node: DictConfig | Mapping | None, where: str, whole: bool = True) -> None:
    """SFTError naming `<where>.<key>`, the expected type and the value, for the first value of
    `node` (a config with `_target_`) that does not fit its parameter's annotation. `whole`:
    the node gives every argument (a top-level config: a required one missing is named; the
    model passes its head, optimizer... some of theirs)."""
    if not node or "_target_" not in node:
        return
    try:
        values = (
            OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        )
    except InterpolationResolutionError as err:
        raise SFTError(unresolvable_message(err, where)) from err
    target = str(values["_target_"])
    try:  # pydoc: None when not found (hydra's get_object logs a traceback-like error first)
        found, why = pydoc.locate(target) is not None, None
    except pydoc.ErrorDuringImport as err:  # the module exists but fails to import
        found, why = False, f"importing it raised {err.exc.__name__}: {err.value}"
    if not found:
        raise SFTError(f"{where}._target_: cannot import {target!r}; {why or _not_found(target)}")
    accepted = _parameter_names(target)
    unknown = [k for k in values if not k.startswith("_") and accepted and k not in accepted]
    if unknown:
        close = difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        # e.g. the packaged optimizer's `fused: true` after `_target_=torch.optim.RMSprop`
        drop = "" if close else f"; ~{where}.{unknown[0]} removes it (or leave out its +...)"
        raise SFTError(
            f"{where}.{unknown[0]}: {target.rpartition('.')[2]} takes no such setting "
            f"({hint}it takes: {', '.join(accepted)}){drop}"
        )
    missing = [name for name in _required_parameters(target) if name not in values]
    # `_partial_`: the rest comes later; `_args_`: positional ones (StochasticWeightAveraging)
    if whole and missing and not values.get("_partial_") and "_args_" not in values:
        # was: Hydra's "Error in call to target ... missing 1 required positional argument"
        raise SFTError(
            f"missing value for {where}.{missing[0]}: {target.rpartition('.')[2]} needs it; set "
            f"{where}.{missing[0]}=..."
        )
    hints = _parameter_hints(target)
    for key, value in values.items():
        if isinstance(value, Mapping) and _is_config(value):  # e.g. model.backbone: its own target
            check_config_types(value, f"{where}.{key}", whole=False)
            continue
        if key.startswith("_") or key not in hints or _is_config(value):
            continue
        try:
            check_value(value, hints[key], f"{where}.{key}")
        except SFTError as err:
            # Lightning's max_steps (not torch schedules' last_epoch, -1 for none run yet)
            if value is None and pydoc.locate(target) is Trainer and _default(target, key) == -1:
                raise SFTError(f"{err}; -1 is no limit, its default: {where}.{key}=-1") from None
            raise
    if pydoc.locate(target) is Trainer:
        _check_validation_schedule(values, where)


def _default(target: str, name: str) -> Any:
    """The default of parameter `name` of `target` (inspect's `empty` when none or unknown)."""
    params = _parameters(target) or []
    return next((p.default for p in params if p.name == name), inspect.Parameter.empty)


def _check_validation_schedule(values: Mapping, where: str) -> None:
    """Lightning's refusal of a fractional `val_check_interval` without epochs to count it in,
    said with the other values (was: when the trainer was built, so a sweep's job of such a value
    failed after the jobs before it had run), and naming the setting the user may not have typed
    (method=linear_probe sets check_val_every_n_epoch=null)."""
    if (
        "check_val_every_n_epoch" in values
        and values["check_val_every_n_epoch"] is None
        and isinstance(values.get("val_check_interval"), float)
    ):
        raise SFTError(
            f"{where}.val_check_interval: expected a whole number of batches (or a time, "
            f"'DD:HH:MM:SS'), got {values['val_check_interval']!r}: with "
            f"{where}.check_val_every_n_epoch=null (which method=linear_probe sets, to validate "
            "after its one step with trainer.val_check_interval=1) there is no epoch for a "
            "fraction of one"
        )


def check_value(value: Any, hint: Any, key: str, number_text: bool = False) -> None:
    """SFTError naming `key`, what `hint` expects and `value`, when `value` does not fit the
    annotation `hint` (left alone when pydantic cannot validate `hint`). `number_text`: the
    callable takes a number as text too (e.g. `seed: ${oc.env:SEED}`)."""
    if _adapter(hint) is None:
        return
    fits = _fits(hint, value)
    # Lax mode reads 'no', 'off' or 0 as False, but the callable gets the value itself, and
    # a non-empty string is true: a switch takes true or false only.
    if _is_switch(hint) and value is not None and not isinstance(value, bool):
        fits = False
    # ... and true as 1, 2.0 as 2 for an integer (was: adapter.r=2.0 reached peft's layers);
    # strict mode still matches 16.0 to a literal 16, but the callable gets the float (was:
    # trainer.precision=16.0, Lightning's "No precision set" in Hydra's block)
    if fits and isinstance(value, bool | float) and not _fits(hint, value, strict=True):
        fits = False
    if (
        fits
        and isinstance(value, float)
        and not isinstance(_adapter(hint).validate_python(value), float)
    ):
        fits = False
    # Lax mode also reads '0.1' (a quoted number) as a float, but the callable gets the string
    # (was: "TypeError: '>' not supported between 'float' and 'str'" inside the model)
    if (
        fits
        and not number_text
        and _is_number_text(value)
        and not _fits(hint, "not a number")
        and not _fits(hint, value, strict=True)  # e.g. Lightning's precision takes "32"
    ):
        raise SFTError(
            f"{key}: expected {describe(hint)}, got the string {value!r}: write it without quotes "
            "(from ${oc.env:...}: ${oc.decode:${oc.env:...}} reads the number)"
        )
    if not fits:
        raise SFTError(
            f"{key}: expected {describe(hint)}, got {value!r}{_quoting_hint(value, hint, key)}"
        )


def _is_number_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _quoting_hint(value: Any, hint: Any, key: str) -> str:
    """For a list of strings given unquoted numbers, switches or nulls (`[1,3,5]`): YAML (the
    command line's and the config files') read them as such, and quoting makes them names."""
    scalars = (bool, int, float, type(None))
    if not isinstance(value, list) or not any(isinstance(v, scalars) for v in value):
        return ""
    typed = [_as_typed(v) for v in value]
    if not _fits(hint, typed):
        return ""
    return (
        " (YAML reads 1, true and null as values, not names: quote them, "
        f"{quoted_list_override(key, typed)})"
    )


def _as_typed(value: Any) -> str:
    """A value as the command line writes it (`null`, `true`)."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _fits(hint: Any, value: Any, strict: bool = False) -> bool:
    """Whether pydantic validates `value` as `hint` (lax mode unless `strict`)."""
    try:
        _adapter(hint).validate_python(value, strict=strict)
    except ValidationError:
        return False
    return True


def _is_switch(hint: Any) -> bool:
    """`bool` or `bool | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return {a for a in typing.get_args(hint) if a is not type(None)} == {bool}
    return hint is bool


def _is_config(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "_target_" in value
    if isinstance(value, list):
        return any(_is_config(v) for v in value)
    return False


@functools.cache
def _hands_on(cls: type) -> tuple[int, set[str]] | None:
    """When `cls.__init__` hands its `**kwargs` whole to `super().__init__(..., **kwargs)` and
    reads none of them itself (a subclass of sft's model, as the README writes one): the
    positional arguments and keyword names that call sets itself; else None."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))
    except (OSError, TypeError, SyntaxError):  # no source (a C class, a REPL): not known
        return None
    init = tree.body[0] if tree.body else None
    if not isinstance(init, ast.FunctionDef) or init.args.kwarg is None:
        return None
    name = init.args.kwarg.arg
    uses = [n for n in ast.walk(init) if isinstance(n, ast.Name) and n.id == name]
    calls = [
        call
        for call in ast.walk(init)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "__init__"
        and isinstance(call.func.value, ast.Call)
        and isinstance(call.func.value.func, ast.Name)
        and call.func.value.func.id == "super"
        and any(
            k.arg is None and isinstance(k.value, ast.Name) and k.value.id == name
            for k in call.keywords
        )
    ]
    if len(uses) != 1 or len(calls) != 1:
        return None
    # `*args` handed on passes what a config gives by position (`_args_`): none by name
    positional = sum(not isinstance(a, ast.Starred) for a in calls[0].args)
    return positional, {k.arg for k in calls[0].keywords if k.arg is not None}


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD


def _takers(obj: Any) -> tuple[list[inspect.Parameter], list[Any]]:
    """The parameters `obj` takes and what declares them: `obj`, and where a class hands its
    `**kwargs` on to its base's `__init__`, the base's parameters that call leaves to them (and
    on up). Raises where a signature cannot be read."""
    params = list(inspect.signature(obj).parameters.values())
    takers = [obj]
    if not inspect.isclass(obj):
        return params, takers
    bases = [c for c in obj.__mro__ if "__init__" in vars(c)]
    for cls, base in itertools.pairwise(bases):
        handed = _hands_on(cls) if any(p.kind is _VAR_KEYWORD for p in params) else None
        if handed is None:
            break
        positional, named = handed
        params = [p for p in params if p.kind is not _VAR_KEYWORD]
        own = {p.name for p in params}
        base_params = list(inspect.signature(base).parameters.values())
        params += [
            p
            for p in base_params[positional:]
            if p.name not in named and p.name not in own and p.kind in (*_NAMED, _VAR_KEYWORD)
        ]
        takers.append(base)
    return params, takers


def _parameters(target: str) -> list[inspect.Parameter] | None:
    """`_takers(target)`'s parameters; None when they cannot be read."""
    try:
        return _takers(get_object(target))[0]
    except Exception:
        return None


def _parameter_names(target: str) -> tuple[str, ...]:
    """The keyword parameters `target` takes; () when it takes **kwargs or cannot be read."""
    params = _parameters(target)
    if params is None or any(p.kind is _VAR_KEYWORD for p in params):
        return ()
    return tuple(p.name for p in params if p.kind in _NAMED)


def _required_parameters(target: str) -> tuple[str, ...]:
    """The parameters `target` needs (no default), by name; () when it cannot be read."""
    params = _parameters(target) or []
    return tuple(
        p.name for p in params if p.kind in _NAMED and p.default is inspect.Parameter.empty
    )


@functools.cache
def _parameter_hints(target: str) -> dict[str, Any]:
    try:
        obj = get_object(target)
        hints: dict[str, Any] = {}
        # a class that hands its **kwargs on takes its bases' annotations too (its own first)
        for taker in reversed(_takers(obj)[1]):
            fn = taker.__init__ if inspect.isclass(taker) else taker
            hints |= typing.get_type_hints(fn, include_extras=True)  # keeps Annotated bounds
    except Exception:  # odd hints: no check
        return {}
    hints.pop("return", None)
    return hints | _MISSING_BOUNDS.get(obj, {})


@functools.cache
def _adapter(hint: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # a type pydantic cannot validate: left to the callable
        return None


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _bounds(metadata: Sequence[Any]) -> str:
    """' >= 0 and <= 1' for annotated_types bounds (Ge, Interval, ...); '' for none."""
    parts = [
        f"{op} {getattr(m, name)}"
        for m in metadata
        for name, op in _BOUNDS.items()
        if getattr(m, name, None) is not None
    ]
    return " " + " and ".join(parts) if parts else ""


def describe(hint: Any) -> str:
    """'a float', 'an integer or null', 'one of 'a', 'b'', 'a float >= 0', ... for error
    messages."""
    if hint in _NAMES:
        return _NAMES[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return describe(args[0]) + _bounds(hint.__metadata__)
    if origin in (typing.Union, types.UnionType):
        named = [describe(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return ("one of " if len(args) > 1 else "") + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, Sequence):
        inner = describe(args[0]) if args else "values"
        return f"a list of {inner.removeprefix('a ').removeprefix('an ')}s"
    return getattr(hint, "__name__", str(hint))
