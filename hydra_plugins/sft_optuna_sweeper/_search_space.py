"""The search space: sweep overrides and explicit dicts -> Optuna distributions, and back to
override strings for each trial."""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    QuotedString,
    RangeSweep,
    Transformer,
)
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sft.errors import SFTError

_SCALARS = (str, int, float, bool, type(None))


@dataclass
class SearchSpace:
    """What every trial gets: sampled `distributions` (parameter name -> distribution, where the
    name is the override's key) and `fixed` overrides passed as they are."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    # (key, override): in order, as deleting and re-adding a key (`~k`, `+k=...`) needs both
    fixed: list[tuple[str, str]] = field(default_factory=list)
    # `+` / `++` of a sampled key that the configs lack (`+model.lr_head=tag(log,...)`)
    adds: dict[str, str] = field(default_factory=dict)

    def trial_overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The overrides of one trial: the fixed ones, then `key=value` per sampled parameter."""
        sampled = self.sampled_overrides({key: params[key] for key in self.distributions})
        return [line for _, line in self.fixed] + sampled

    def sampled_overrides(self, params: Mapping[str, Any]) -> list[str]:
        """`key=value` per sampled parameter, with the `+` of a key the configs lack."""
        return [f"{self.adds.get(k, '')}{k}={format_value(v)}" for k, v in params.items()]

    def example_params(self) -> dict[str, Any]:
        """A value of each distribution (its low end, or first choice): the overrides of a
        trial, whose config is composed to check the sweep before any trial is asked."""
        return {
            key: dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low
            for key, dist in self.distributions.items()
        }

    def set_value(
        self,
        key: str,
        line: str | None = None,
        dist: BaseDistribution | None = None,
        add: str = "",
    ):
        """The latest value of `key` wins: a distribution (`add`: its `+` or `++`), or a fixed
        override `line`. A key an earlier value adds (`+key`) is added by the latest too, as
        Hydra composes `+key=a key=b` (was: `key=b` alone, which does not compose)."""
        # the last word on the key: a delete after an add (`+k=1 ~k k=3`) ends it, as Hydra
        # then refuses `k=3` for a key the config lacks
        last = next((old for k, old in reversed(self.fixed) if k == key), "")
        earlier = self.adds.pop(key, None) or _add_prefix(last)
        self.distributions.pop(key, None)
        add = add or earlier
        self.fixed = [(k, old) for k, old in self.fixed if k != key or old.startswith("~")]
        if dist is not None:
            self.distributions[key] = dist
            if add:
                self.adds[key] = add
        if line is not None:
            self.fixed.append((key, line if _add_prefix(line) else add + line))


def _add_prefix(line: str) -> str:
    """The `+` or `++` an override line starts with ("" for none)."""
    return line[: len(line) - len(line.lstrip("+"))]


def build_search_space(params: Mapping[str, Any], arguments: Iterable[str]) -> SearchSpace:
    """`params` from the sweeper's config, then the command line's overrides (which win)."""
    space = SearchSpace()
    parser = OverridesParser.create()
    for key, value in params.items():
        if isinstance(value, Mapping | DictConfig) and "type" in value:
            name = key.lstrip("+")
            space.set_value(name, dist=distribution_from_dict(key, value), add=key[: -len(name)])
        else:
            text = value if isinstance(value, str) else format_value(_plain(value))
            _add(space, _parse(parser, f"{key}={text}"))
    for argument in arguments:
        _add(space, _parse(parser, argument))
    return space


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value


def _parse(parser: OverridesParser, line: str) -> Override:
    try:
        return parser.parse_override(line)
    except HydraException as exc:
        raise SFTError(f"hydra.sweeper.params: cannot parse '{line}': {exc}") from exc


def _add(space: SearchSpace, override: Override) -> None:
    element = override.get_key_element()
    key = element.lstrip("+~")
    if override.is_sweep_override():
        add = element[: -len(key)]
        space.set_value(key, dist=distribution_from_override(override), add=add)
    elif override.is_delete():
        space.fixed.append((key, override.input_line or f"~{key}"))
    else:
        assert override.input_line is not None
        space.set_value(key, line=override.input_line)


def distribution_from_override(override: Override) -> BaseDistribution:
    """`a,b` / `choice(a,b)` -> categorical; `range(start,stop[,step])` -> int (or float with
    float bounds) over the range's values (stop excluded, as in Hydra); `interval(low,high)` ->
    float, or int with the `int` tag or cast (`int(interval(...))`), log-scaled with the `log`
    tag."""
    value = override.value()
    key = override.get_key_element()
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_iterator(transformer=Transformer.identity))
        # a quoted choice of `'a b',c` is kept quoted by the identity (choice() unquotes it)
        choices = [c.text if isinstance(c, QuotedString) else c for c in choices]
        return CategoricalDistribution(_scalar_choices(key, choices))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator(transformer=Transformer.identity))
        if not values:
            raise SFTError(f"{override.input_line}: the range is empty")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(min(values), max(values), step=abs(int(value.step)))
        # the ends in decimal: Hydra's last value of range(0,1,0.3) is 0.8999999999999999, which
        # Optuna's step then left out (was: 0.9 never drawn)
        first = Decimal(repr(value.start))
        last = first + (len(values) - 1) * Decimal(repr(value.step))
        low, high = sorted((float(first), float(last)))
        return FloatDistribution(low, high, step=abs(float(value.step)))
    if isinstance(value, IntervalSweep):
        assert value.start is not None and value.end is not None
        log = "log" in value.tags
        try:
            # tag(int, ...), or Hydra's int(interval(...)), which makes the bounds integers
            # (was: read as a float interval, so an integer setting got 8.359...)
            if "int" in value.tags or all(isinstance(v, int) for v in (value.start, value.end)):
                # the integers inside the bounds (was: 1.5 truncated to 1, below the interval)
                low, high = math.ceil(value.start), math.floor(value.end)
                return IntDistribution(low, high, log=log)
            return FloatDistribution(value.start, value.end, log=log)
        except ValueError as exc:  # Optuna's: low > high, a log scale from 0 or below
            raise SFTError(f"{override.input_line}: {exc}") from None
    raise SFTError(
        f"{override.input_line}: the Optuna sweeper takes choice, range and interval sweeps"
    )


def distribution_from_dict(key: str, spec: Mapping[str, Any]) -> BaseDistribution:
    """{type: float|int, low, high, step?, log?} or {type: categorical, choices: [...]}."""
    spec = dict(_plain(spec))
    kind = spec.pop("type")
    known = {"float": {"low", "high", "step", "log"}, "int": {"low", "high", "step", "log"}}
    known["categorical"] = {"choices"}
    if kind not in known:
        raise SFTError(f"hydra.sweeper.params.{key}: type must be float, int or categorical")
    unknown = set(spec) - known[kind]
    if unknown:
        raise SFTError(f"hydra.sweeper.params.{key}: unknown keys {sorted(unknown)} for {kind}")
    try:
        if kind == "categorical":
            return CategoricalDistribution(_scalar_choices(key, list(spec["choices"])))
        if kind == "int":
            return IntDistribution(
                int(spec["low"]),
                int(spec["high"]),
                step=int(spec.get("step", 1)),  # step 0: Optuna's refusal (was: taken as 1)
                log=bool(spec.get("log", False)),
            )
        return FloatDistribution(
            float(spec["low"]),
            float(spec["high"]),
            step=spec.get("step"),
            log=bool(spec.get("log", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SFTError(f"hydra.sweeper.params.{key}: {type(exc).__name__}: {exc}") from exc


def _scalar_choices(key: str, choices: list[Any]) -> list[CategoricalChoiceType]:
    # Optuna stores categorical choices as JSON scalars
    if not choices or not all(isinstance(c, _SCALARS) for c in choices):
        raise SFTError(f"{key}: choices must be a non-empty list of scalars, got {choices}")
    return choices


def outside(dist: BaseDistribution, value: Any) -> str | None:
    """What `dist` draws, when `value` is not one of its values (an enqueued trial's); None for
    a value it holds. Bounds and choices only: Optuna takes an enqueued value between steps."""
    if isinstance(dist, CategoricalDistribution):
        return None if value in dist.choices else f"one of {list(dist.choices)}"
    assert isinstance(dist, FloatDistribution | IntDistribution)
    kind = "integers" if isinstance(dist, IntDistribution) else "numbers"
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(dist, IntDistribution) and number and value != int(value):
        number = False
    inside = number and dist.low <= value <= dist.high
    return None if inside else f"{kind} from {dist.low} to {dist.high}"


def format_value(value: Any) -> str:
    """`value` as the right-hand side of an override that parses back to the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, list):  # a plain list in params (`model.metrics: [acc, f1]`)
        candidates = ["[" + ",".join(format_value(v) for v in value) + "]"]
    elif isinstance(value, dict):
        candidates = ["{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"]
    elif isinstance(value, str):
        quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        candidates = [value, quoted]
    else:
        candidates = []
    parser = OverridesParser.create()
    for text in candidates:  # the first that parses back to `value` ({1: 2}'s key does not)
        try:
            if parser.parse_override(f"k={text}").value() == value:
                return text
        except HydraException:
            continue
    raise SFTError(f"cannot write {value!r} as an override value")
