"""A search space: recipe fields and the distribution each is sampled from, read from YAML and validated once.

A space file maps dotted recipe fields to one distribution each::

    optim.lr: {log_uniform: [1.0e-5, 1.0e-4]}
    loss.temperature: {uniform: [0.02, 0.1]}
    train.batch_size: {choice: [32, 64, 128]}
    train.max_steps: {int: [100, 400], step: 100}
    data.augment:
      choice:                                 # whole named pipelines, one categorical choice
        dropout: {identity: {}}
        crop: {span_crop: {min_ratio: 0.6, max_ratio: 0.9}}

A choice is a list of scalars, or a mapping from names to values of any shape (a pipeline, a section); the
names are what the study records. An unknown field, an unknown distribution or bad bounds raise
:class:`~textcl.errors.ConfigError` naming the field; :meth:`SearchSpace.check` then validates every choice
and both ends of every range against the recipe, so a trial never starts on a value the recipe refuses.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Callable

from textcl.config import TrainConfig
from textcl.errors import ConfigError

KINDS = ("log_uniform", "uniform", "int", "choice")
#: fields a trial may not vary: what names the run, and the sets every trial is scored (or reported) on
FIXED_FIELDS = {"name": "names the run", "output_dir": "is chosen per trial by textcl tune",
                "eval.data": "the dev sets must be the same for every trial, or their scores do not compare",
                "eval.retrieval": "the dev sets must be the same for every trial, or their scores do not compare",
                "eval.test": "test sets are never used to choose, and do not vary"}
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One searched field. ``low``/``high`` bound ``log_uniform``, ``uniform`` and ``int`` (``step`` optional
    for the last two); ``options`` maps each choice's label (what the study records) to its value."""

    field: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    options: dict | None = None

    def sample(self, trial) -> Any:
        """The value for ``trial`` (an Optuna trial, or anything with its ``suggest_*`` methods)."""
        if self.kind == "log_uniform":
            return trial.suggest_float(self.field, self.low, self.high, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(self.field, self.low, self.high, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.field, int(self.low), int(self.high), step=int(self.step or 1))
        return self.options[trial.suggest_categorical(self.field, list(self.options))]

    def value(self, recorded: Any) -> Any:
        """The field's value for what a study recorded (a choice's label, else the number itself)."""
        return self.options[recorded] if self.kind == "choice" else recorded

    def probes(self) -> list:
        """The values :meth:`SearchSpace.check` tries: both ends of a range, every option of a choice."""
        return list(self.options.values()) if self.kind == "choice" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice of {', '.join(map(str, self.options))}"
        return f"{self.kind} [{self.low:g}, {self.high:g}]" + (f" step {self.step:g}" if self.step else "")


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    source: str | None = None

    @property
    def fields(self) -> list[str]:
        return [p.field for p in self.params]

    def sample(self, trial) -> dict[str, Any]:
        """``{field: value}`` for one trial, in the space's order."""
        return {p.field: p.sample(trial) for p in self.params}

    def values(self, recorded: dict[str, Any]) -> dict[str, Any]:
        """``{field: value}`` for a study's recorded parameters (choice labels mapped to their values)."""
        return {p.field: p.value(recorded[p.field]) for p in self.params if p.field in recorded}

    def check(self, build: Callable[[dict[str, Any]], Any], fixed: dict[str, str] | None = None) -> None:
        """Validate the space against a recipe: ``build({field: value})`` must accept every probe value
        (raising :class:`ConfigError` otherwise), and no field may be one ``fixed`` (field -> by what) sets."""
        for p in self.params:
            for field, by in (fixed or {}).items():
                if _overlaps(p.field, field):
                    raise ConfigError(p.field, f"is searched here and fixed by {by}; keep it in one place",
                                      self.source)
            for value in p.probes():
                try:
                    build({p.field: value})
                except ConfigError as exc:
                    raise ConfigError(p.field, f"{p.kind} value {value!r} makes the recipe invalid: "
                                               f"{exc.field}: {exc.reason}", self.source) from None


def _overlaps(a: str, b: str) -> bool:
    """True when one dotted field is the other or lies inside it (``loss`` and ``loss.temperature``)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def recipe_field_names(cls=TrainConfig, prefix: str = "") -> list[str]:
    """Every dotted field of a recipe, sections included (``loss``, ``loss.moco``, ``loss.moco.momentum``)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        out.append(path)
        inner = [a for a in (typing.get_args(hints[f.name]) or (hints[f.name],)) if dataclasses.is_dataclass(a)]
        if inner:
            out.extend(recipe_field_names(inner[0], path + "."))
    return out


def _check_field(field: str, source: str | None) -> None:
    known = recipe_field_names()
    if field in known:
        if field in FIXED_FIELDS:
            raise ConfigError(field, f"cannot be searched: it {FIXED_FIELDS[field]}", source)
        if field == "eval" or field.startswith("eval."):
            raise ConfigError(field, "cannot be searched: it holds what scores every trial (the dev sets, the "
                                     "guards, when and how they select), which must be the same for every trial; "
                                     "set it in the recipe or with --set", source)
        return
    section, _, name = field.rpartition(".")
    siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == section]
    where = f"fields of {section}" if section else "recipe sections"
    if not siblings:
        raise ConfigError(field, f"unknown recipe field: {section!r} is not a recipe section", source)
    raise ConfigError(field, f"unknown recipe field; expected one of the {where}: {', '.join(siblings)}", source)


def _number(x: Any, where: str, source: str | None) -> float:
    if isinstance(x, bool):
        raise ConfigError(where, f"expected a number, got {x!r}", source)
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            return float(x)
        except ValueError:
            pass
    raise ConfigError(where, f"expected a number, got {x!r}", source)


def _bounds(kind: str, raw: Any, where: str, source: str | None) -> tuple[float, float]:
    example = {"log_uniform": "[1.0e-5, 1.0e-4]", "uniform": "[0.02, 0.1]", "int": "[16, 128]"}[kind]
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise ConfigError(where, f"expected [low, high], e.g. {example}, got {raw!r}", source)
    low, high = (_number(x, where, source) for x in raw)
    if kind == "int" and not all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        raise ConfigError(where, f"expected two integers, got {raw!r}", source)
    if not low < high:
        raise ConfigError(where, f"expected low < high, got {raw!r}", source)
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(where, f"a log-uniform range must be positive, got {raw!r}", source)
    return low, high


def _options(raw: Any, where: str, source: str | None) -> dict:
    if isinstance(raw, dict):
        if not raw or not all(isinstance(k, str) and k for k in raw):
            raise ConfigError(where, "expected a non-empty mapping from names to values", source)
        return dict(raw)
    if isinstance(raw, (list, tuple)) and raw:
        for x in raw:
            if not isinstance(x, _SCALARS):
                raise ConfigError(where, f"a list of options holds numbers, strings, true/false or null, got {x!r}; "
                                         "name options of other shapes with a mapping (name: value)", source)
        options = {x: x for x in raw}
        if len(set(map(repr, raw))) != len(raw) or len(options) != len(raw):  # {1: 1, True: True} is one key
            raise ConfigError(where, f"an option is listed twice: {list(raw)!r}", source)
        return options
    raise ConfigError(where, f"expected a list of options or a mapping from names to values, got {raw!r}", source)


def parse_param(field: str, spec: Any, source: str | None = None) -> Param:
    """One ``field: {kind: ...}`` entry of a space."""
    if not isinstance(field, str) or not field:
        raise ConfigError(str(field), "expected a dotted recipe field such as optim.lr", source)
    _check_field(field, source)
    if not isinstance(spec, dict):
        raise ConfigError(field, f"expected a distribution, one of {', '.join(KINDS)} (e.g. {{uniform: [0.02, 0.1]}}),"
                                 f" got {spec!r}", source)
    kinds = [k for k in spec if k in KINDS]
    unknown = [k for k in spec if k not in KINDS and k != "step"]
    if unknown:
        raise ConfigError(f"{field}.{unknown[0]}", f"unknown distribution; expected one of {', '.join(KINDS)}", source)
    if len(kinds) != 1:
        raise ConfigError(field, f"expected exactly one distribution of {', '.join(KINDS)}, got {list(spec)!r}",
                          source)
    kind = kinds[0]
    where = f"{field}.{kind}"
    step = spec.get("step")
    if step is not None:
        if kind not in ("uniform", "int"):
            raise ConfigError(f"{field}.step", f"a step goes with uniform or int, not {kind}", source)
        step = _number(step, f"{field}.step", source)
        if step <= 0 or (kind == "int" and step != int(step)):
            raise ConfigError(f"{field}.step", f"expected a positive {'integer' if kind == 'int' else 'number'}, "
                                               f"got {spec['step']!r}", source)
    if kind == "choice":
        return Param(field, kind, options=_options(spec[kind], where, source))
    low, high = _bounds(kind, spec[kind], where, source)
    return Param(field, kind, low=low, high=high, step=step)


def parse_space(data: Any, source: str | None = None) -> SearchSpace:
    """A :class:`SearchSpace` from a mapping of dotted recipe fields to distributions."""
    if not isinstance(data, dict) or not data:
        raise ConfigError("", "expected a mapping of recipe fields to distributions, e.g. "
                              "optim.lr: {log_uniform: [1.0e-5, 1.0e-4]}", source)
    params = tuple(parse_param(field, spec, source) for field, spec in data.items())
    for i, a in enumerate(params):
        for b in params[i + 1:]:
            if _overlaps(a.field, b.field):
                raise ConfigError(b.field, f"overlaps {a.field}: search a section or its fields, not both", source)
    return SearchSpace(params, source)


def load_space(path) -> SearchSpace:
    """Read and parse a space YAML file (errors name the file and the field)."""
    from textcl.config import read_yaml

    return parse_space(read_yaml(path, "space"), source=str(path))
