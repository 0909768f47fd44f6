"""The recipes a study trains: the base recipe (its YAML with ``--set`` applied), each trial's (the base with
the trial's sampled values), and ``best.yaml`` (the best trial's, runnable as it is)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from textcl._io import atomic_write_text
from textcl.config import TrainConfig, apply_overrides, config_from_dict, read_yaml, set_field
from textcl.errors import ConfigError

#: what a trial sets beside its sampled values, none of which changes the weights it trains: the test sets are
#: neither evaluated nor reported (so they cannot choose), and there are no checkpoints (a killed trial is
#: rerun whole), plots, trackers or evaluation of the untrained model
TRIAL_SETTINGS = {"eval.test": [], "eval.before": False, "train.checkpoint_every": 0, "train.plot": False,
                  "train.report_to": "none"}


@dataclass(frozen=True)
class BaseRecipe:
    """A recipe as its YAML mapping (``data``) with the ``--set`` overrides applied, validated once."""

    data: dict
    source: str
    overrides: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: str | Path, overrides=()) -> "BaseRecipe":
        raw = read_yaml(path, "recipe")
        if not isinstance(raw, dict):
            raise ConfigError("", "expected a mapping of sections (model, data, loss, optim, eval, train)", str(path))
        data = apply_overrides(raw, overrides, source=str(path))
        config_from_dict(data, source=str(path))
        return cls(data, str(path), tuple(overrides))

    def recipe(self, values: dict[str, Any]) -> dict:
        """The recipe mapping with ``{field: value}`` set (a copy; sections are created as needed)."""
        data = copy.deepcopy(self.data)
        for field, value in values.items():
            set_field(data, field, copy.deepcopy(value), source=self.source)
        return data

    def config(self, values: dict[str, Any], *, trial: bool = False) -> TrainConfig:
        """The validated config of :meth:`recipe`; ``trial`` adds :data:`TRIAL_SETTINGS`."""
        data = self.recipe({**values, **(TRIAL_SETTINGS if trial else {})})
        return config_from_dict(data, source=self.source)

    def fixed_fields(self) -> dict[str, str]:
        """The fields ``--set`` fixes, each mapped to the option that fixes it (a space may not search them)."""
        return {a.split("=", 1)[0].strip(): f"--set {a}" for a in self.overrides}


def write_recipe(path: str | Path, recipe: dict, header: list[str] = ()) -> None:
    """Write a recipe mapping as YAML (atomically), after ``# `` comment lines."""
    text = "".join(f"# {line}\n" for line in header)
    text += yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True, width=120)
    atomic_write_text(path, text)
