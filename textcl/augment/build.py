"""Building augmenters from plain config (dicts and lists, as loaded from a recipe's YAML).

Grammar::

    augmenter := NAME                      # defaults, e.g. "identity"
               | {NAME: {OPTION: value}}   # e.g. {"word_deletion": {"rate": 0.1}}
               | [augmenter, ...]          # shorthand for {"compose": [...]}
    combinator := {"compose": [augmenter, ...]}
                | {"one_of": [augmenter, ...]}
                | {"one_of": {"augmenters": [augmenter, ...], "weights": [w, ...]}}
                | {"random_apply": {"p": 0.5, "augmenter": augmenter}}

Names: ``identity``, ``span_crop``, ``word_deletion``, ``word_swap``, ``word_repetition``, ``synonym``,
``back_translation``, ``token_cutoff`` (token level: on its own, not inside a combinator), and the
combinators ``compose``, ``one_of``, ``random_apply``. The options are the classes' constructor
arguments. Errors are ``ConfigError`` naming the dotted field path (``augment.compose[1].word_deletion.rate``)
and, for an unknown name or option, the valid ones.

YAML example (a recipe's ``augment:`` section)::

    augment:
      compose:
        - span_crop: {min_ratio: 0.6, max_ratio: 0.9}
        - random_apply:
            p: 0.5
            augmenter: {word_deletion: {rate: 0.1}}
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping

from textcl.augment.backtranslate import BackTranslation
from textcl.augment.compose import Compose, OneOf, RandomApply
from textcl.augment.crop import SpanCrop
from textcl.augment.cutoff import TokenCutoff
from textcl.augment.edits import WordDeletion, WordRepetition, WordSwap
from textcl.augment.identity import Identity
from textcl.augment.synonym import Synonym
from textcl.errors import ConfigError

AUGMENTERS: dict[str, type] = {
    cls.name: cls
    for cls in (Identity, SpanCrop, WordDeletion, WordSwap, WordRepetition, Synonym, BackTranslation, TokenCutoff)
}
COMBINATORS = ("compose", "one_of", "random_apply")
# options that only the Python API can pass (objects, not plain config values)
_PYTHON_ONLY = {"back_translation": {"translator"}}


def default_pipeline() -> Compose:
    """Span crop (60–90% of the words) then word deletion (10%): the default of ``textcl augment preview``."""
    return Compose([SpanCrop(min_ratio=0.6, max_ratio=0.9), WordDeletion(rate=0.1)])


def build_augmenter(config: Any, field: str = "augment") -> Any:
    """Build an augmenter or combinator from plain config (see the module docstring for the grammar).

    ``field`` is the dotted path of ``config`` in the recipe, used in error messages.
    """
    if isinstance(config, str):
        return _build(config, {}, field)
    if isinstance(config, list):
        return _construct(Compose, field, _build_list(config, field), list_field=field)
    if isinstance(config, Mapping):
        if len(config) != 1:
            keys = ", ".join(map(str, config)) or "none"
            raise ConfigError(field, f"must have exactly one key, the augmenter's name; got {keys}")
        (name, options), = config.items()
        return _build(name, options, field)
    raise ConfigError(
        field, f"must be an augmenter name, a {{name: options}} mapping or a list; got {type(config).__name__}"
    )


def _valid_names() -> str:
    return ", ".join([*AUGMENTERS, *COMBINATORS])


def _build(name: Any, options: Any, field: str) -> Any:
    path = f"{field}.{name}"
    if name == "compose":
        return _construct(Compose, path, _build_list(options, path), list_field=path)
    if name == "one_of":
        if isinstance(options, Mapping):
            _check_keys(options, {"augmenters", "weights"}, path, required={"augmenters"})
            augmenters = _build_list(options["augmenters"], f"{path}.augmenters")
            return _construct(
                OneOf, path, augmenters, weights=options.get("weights"), list_field=f"{path}.augmenters"
            )
        return _construct(OneOf, path, _build_list(options, path), list_field=path)
    if name == "random_apply":
        if not isinstance(options, Mapping):
            raise ConfigError(path, "must be a mapping with 'augmenter' and 'p'")
        _check_keys(options, {"augmenter", "p"}, path, required={"augmenter"})
        inner = build_augmenter(options["augmenter"], f"{path}.augmenter")
        return _construct(RandomApply, path, inner, **{k: v for k, v in options.items() if k != "augmenter"})
    cls = AUGMENTERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(field, f"unknown augmenter {name!r}; valid names: {_valid_names()}")
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(path, f"options must be a mapping of option: value, got {options!r}")
    params = [p for p in inspect.signature(cls).parameters if p not in _PYTHON_ONLY.get(name, ())]
    _check_keys(options, set(params), path, order=params)
    return _construct(cls, path, **options)


def _build_list(items: Any, path: str) -> list:
    if not isinstance(items, list) or not items:
        raise ConfigError(path, f"must be a non-empty list of augmenters, got {items!r}")
    return [build_augmenter(item, f"{path}[{i}]") for i, item in enumerate(items)]


def _check_keys(
    options: Mapping, valid: set, path: str, required: set = frozenset(), order: list | None = None
) -> None:
    names = order or sorted(valid)
    for key in options:
        if key not in valid:
            raise ConfigError(f"{path}.{key}", f"unknown option; valid options: {', '.join(names) or 'none'}")
    for key in sorted(required):
        if key not in options:
            raise ConfigError(f"{path}.{key}", "is required")


def config_error_reason(exc: ConfigError) -> str:
    """A ``ConfigError``'s message without its ``source: field: `` prefix."""
    reason = getattr(exc, "reason", None)
    if reason is None:
        text = str(exc)
        reason = text[text.index(f"{exc.field}: ") + len(exc.field) + 2 :]
    return reason


def _construct(cls: type, path: str, *args: Any, list_field: str | None = None, **options: Any) -> Any:
    """``cls(*args, **options)``, with a ``ConfigError``'s field rewritten as a path in the config.

    A combinator names its children ``augmenters[i]``; in the config they sit at ``list_field[i]``.
    """
    try:
        return cls(*args, **options)
    except ConfigError as exc:
        reason = config_error_reason(exc)
        if list_field is not None and exc.field.startswith("augmenters["):
            field = list_field + exc.field[len("augmenters") :]
        else:
            field = f"{path}.{exc.field}"
        raise ConfigError(field, reason) from None
    except (ImportError, LookupError) as exc:
        raise ConfigError(path, str(exc)) from None
