"""``Synonym``: replace words through a pluggable lexicon (a dict, a callable, or WordNet via nltk)."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, Union

from textcl.augment.rng import SeedStream
from textcl.augment.base import TextAugmenter, check_probability
from textcl.data.lexicon import read_lexicon
from textcl.errors import ConfigError

Lexicon = Union[Mapping[str, Sequence[str]], Callable[[str], Sequence[str]]]

_EDGE_PUNCT = "\"'()[]{}<>.,;:!?«»“”‘’…-"


class Synonym(TextAugmenter):
    """Replace each word that has synonyms with a random one, with probability ``rate``.

    Punctuation at a word's edges is kept (``"cat,"`` → ``"feline,"``), the lookup tries the word as
    written, then in lower case, and a capitalised word gets a capitalised synonym. The word itself is
    never its own replacement. Words are split on whitespace.

    Args:
        lexicon: a mapping ``word -> [synonyms]``, a callable ``word -> [synonyms]``, the string
            ``"wordnet"`` (needs ``pip install 'textcl[wordnet]'`` and the nltk ``wordnet`` corpus), or the
            path of a JSON file holding such a mapping.
        rate: probability of replacing a word that has synonyms, in ``[0, 1]``.

    Example::

        >>> Synonym({"quick": ["fast", "rapid"]}, rate=1.0)(["A quick fox."], seeds=[0])
        ['A fast fox.']  # or 'A rapid fox.', depending on the seed
    """

    name = "synonym"

    def __init__(self, lexicon: Lexicon | str, rate: float = 0.1):
        self._lexicon_spec = lexicon
        self.lookup = _as_lookup(lexicon)
        self.rate = check_probability("rate", rate)

    def augment_one(self, text: str, rng: SeedStream) -> str:
        words = text.split()
        for i, word in enumerate(words):
            core = word.strip(_EDGE_PUNCT)
            if not core:
                continue
            candidates = self._synonyms(core)
            if not candidates or rng.random() >= self.rate:
                continue
            choice = candidates[rng.randrange(len(candidates))]
            if core[0].isupper() and choice[:1].islower():
                choice = choice[0].upper() + choice[1:]
            start = word.index(core)
            words[i] = word[:start] + choice + word[start + len(core) :]
        return " ".join(words)

    def _synonyms(self, word: str) -> list[str]:
        found = self.lookup(word) or (self.lookup(word.lower()) if not word.islower() else None) or ()
        lowered = word.lower()
        return [s for s in found if s and s.lower() != lowered]

    def options(self) -> dict[str, Any]:
        spec = self._lexicon_spec
        return {"lexicon": spec if isinstance(spec, (str, dict)) else repr(spec), "rate": self.rate}


def _as_lookup(lexicon: Any) -> Callable[[str], Sequence[str] | None]:
    if isinstance(lexicon, str):
        if lexicon == "wordnet":
            return wordnet_lexicon()
        return _as_lookup(read_lexicon(lexicon))
    if isinstance(lexicon, Mapping):
        for key, value in lexicon.items():
            if not isinstance(key, str) or isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise ConfigError(
                    "lexicon", f"must map words to lists of synonyms; entry {key!r}: {value!r} is not"
                )
        return lexicon.get
    if callable(lexicon):
        return lexicon
    raise ConfigError(
        "lexicon", f"must be a dict, a callable, 'wordnet' or a JSON file path; got {type(lexicon).__name__}"
    )


def wordnet_lexicon(lang: str = "eng") -> Callable[[str], list[str]]:
    """A lookup ``word -> synonyms`` over WordNet lemmas (multi-word lemmas get spaces).

    Needs the optional extra: ``pip install 'textcl[wordnet]'``, then ``python -m nltk.downloader wordnet``
    (and ``omw-1.4`` for languages other than English). Raises ``ImportError`` or ``LookupError`` with
    those instructions when either is missing.
    """
    try:
        from nltk.corpus import wordnet
    except ImportError as exc:
        raise ImportError(
            "WordNet synonyms need nltk, an optional extra: pip install 'textcl[wordnet]'"
        ) from exc
    try:
        wordnet.synsets("good", lang=lang)
    except LookupError as exc:
        raise LookupError(
            "the nltk WordNet corpus is not installed: run python -m nltk.downloader wordnet"
        ) from exc
    cache: dict[str, list[str]] = {}

    def lookup(word: str) -> list[str]:
        if word not in cache:
            names = []
            for synset in wordnet.synsets(word, lang=lang):
                for name in synset.lemma_names(lang):
                    name = name.replace("_", " ")
                    if name not in names:
                        names.append(name)
            cache[word] = names
        return cache[word]

    return lookup
