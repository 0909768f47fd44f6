"""The augmenter contract: seeded, batch-level, never-empty views.

A text augmenter maps a batch of texts and one seed per text to a batch of views::

    views = augmenter(texts, seeds)          # list[str], len(views) == len(texts)

The view of ``texts[i]`` depends only on ``texts[i]``, ``seeds[i]`` and the augmenter's options, never on
the other texts of the batch, on the batch size or on the process it runs in. The trainer derives each seed
with :func:`view_seed` from the global seed, the epoch, the example's index in the dataset and the view
number, so DataLoader workers need no seeding of their own: with 0, 2 or 8 workers, every example gets the
same views, run after run.

Subclasses implement :meth:`TextAugmenter.augment_one`, which draws all its randomness from the
:class:`~textcl.augment.rng.SeedStream` it is given (a counter-based stream with ``random.Random``'s
methods). Combinators (``Compose``, ``OneOf``, ``RandomApply``) thread one stream through their children.
"""
from __future__ import annotations

from typing import Any, Sequence

from textcl.augment.rng import SeedStream, derive_seed, seed_streams, view_seed
from textcl.errors import ConfigError

__all__ = ["TextAugmenter", "derive_seed", "view_seed", "make_views", "is_blank", "SeedStream"]


def is_blank(text: str) -> bool:
    """True for an empty or whitespace-only string."""
    return not text or text.isspace()


def check_seeds(texts: Sequence[Any], seeds: Sequence[int]) -> None:
    if len(texts) != len(seeds):
        raise ValueError(f"need one seed per text: got {len(texts)} texts and {len(seeds)} seeds")


class TextAugmenter:
    """Base class of the augmenters that work on strings.

    Subclasses set ``name`` (the key used by :func:`textcl.augment.build_augmenter`) and implement
    :meth:`augment_one`. ``__call__`` makes one seeded stream per text and replaces a blank view by its
    original, so no augmenter ever returns an empty view.
    """

    name: str = ""
    token_level = False  # text augmenters run before tokenization; see TokenCutoff for the other kind

    def augment_one(self, text: str, rng: SeedStream) -> str:
        """Return one view of ``text``, drawing randomness only from ``rng``. May return a blank string."""
        raise NotImplementedError

    def __call__(self, texts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        check_seeds(texts, seeds)
        augment_one = self.augment_one
        views = []
        for text, rng in zip(texts, seed_streams(seeds)):
            view = augment_one(text, rng)
            views.append(text if is_blank(view) else view)
        return views

    def options(self) -> dict[str, Any]:
        """The constructor arguments, as plain values; ``build_augmenter(self.get_config())`` rebuilds it.

        Objects only the Python API can pass (a callable lexicon, a translator, a tokenizer object) are not
        plain values: they appear as their ``repr`` (or are left out) and must be passed again by hand.
        """
        return {}

    def get_config(self) -> dict[str, Any]:
        """``{name: options}``: the config form read by :func:`textcl.augment.build_augmenter`."""
        return {self.name: self.options()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({args})"


def make_views(
    augmenter: TextAugmenter,
    texts: Sequence[str],
    *,
    seed: int = 0,
    epoch: int = 0,
    indices: Sequence[int] | None = None,
    n_views: int = 2,
) -> list[list[str]]:
    """``n_views`` views of each text, seeded with :func:`view_seed`; returns ``views[v][i]``.

    ``indices`` are the texts' positions in the dataset (default ``0..len(texts)-1``): pass them so that a
    text gets the same views whichever batch or worker it lands in.
    """
    if indices is None:
        indices = range(len(texts))
    check_seeds(texts, indices)
    return [
        augmenter(texts, [view_seed(seed, epoch, i, v) for i in indices]) for v in range(n_views)
    ]


# --- option validation shared by the augmenters -------------------------------------------------------


def check_probability(field: str, value: Any, *, allow_one: bool = True) -> float:
    """A float in [0, 1] (or [0, 1) when ``allow_one`` is false), else ``ConfigError(field, ...)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"must be a number, got {value!r}")
    upper_ok = value <= 1 if allow_one else value < 1
    if not (0 <= value and upper_ok):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ConfigError(field, f"must be in {interval}, got {value!r}")
    return float(value)


def check_positive_int(field: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {value!r}")
    return value


def check_choice(field: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(field, f"must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
