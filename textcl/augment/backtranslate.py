"""Back-translation: paraphrases made by translating to a pivot language and back, cached on disk."""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from textcl.augment.rng import SeedStream
from textcl.augment.base import TextAugmenter, check_choice, check_seeds, is_blank
from textcl.data.readers import read_lines
from textcl.augment.translation_cache import TranslationCache
from textcl.augment.translator import HFTranslator, Translator, translator_id
from textcl.errors import ConfigError

ON_MISS = ("translate", "original", "error")


def translate_cached(
    texts: Sequence[str],
    translator: Translator,
    src: str,
    tgt: str,
    *,
    cache: TranslationCache | None = None,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Translate ``texts`` from ``src`` to ``tgt``, asking ``translator`` only for texts not in ``cache``.

    Duplicates are translated once; blank texts are returned as they are. The misses go to the translator
    in batches of ``batch_size``, and each batch is committed to the cache before the next one starts, so an
    interrupted call loses at most the batch in flight. ``on_batch(n)`` is called after each batch.
    """
    model, direction = translator_id(translator, src, tgt), f"{src}-{tgt}"
    unique = [t for t in dict.fromkeys(texts) if not is_blank(t)]
    cached = cache.get_many(unique, model, direction) if cache is not None else [None] * len(unique)
    result = {t: c for t, c in zip(unique, cached) if c is not None}
    missing = [t for t in unique if t not in result]
    for start in range(0, len(missing), batch_size):
        batch = missing[start : start + batch_size]
        translated = list(translator(batch, src, tgt))
        if len(translated) != len(batch):
            raise ValueError(
                f"translator {model!r} returned {len(translated)} texts for a batch of {len(batch)}"
            )
        translated = [" ".join(str(t).split()) for t in translated]  # one line per text, whatever came back
        if cache is not None:
            cache.put_many(list(zip(batch, translated)), model, direction)
        result.update(zip(batch, translated))
        if on_batch is not None:
            on_batch(len(batch))
    return [result.get(t, t) for t in texts]


def back_translate(
    texts: Sequence[str],
    translator: Translator,
    *,
    src: str = "en",
    via: str = "de",
    cache: TranslationCache | None = None,
    batch_size: int = 32,
) -> list[str]:
    """Round-trip ``texts`` through ``via``: ``src → via → src``. Both legs are cached (see
    :func:`translate_cached`); a blank round trip gives back the original text."""
    pivot = translate_cached(texts, translator, src, via, cache=cache, batch_size=batch_size)
    back = translate_cached(pivot, translator, via, src, cache=cache, batch_size=batch_size)
    return [t if is_blank(b) else b for t, b in zip(texts, back)]


def back_translate_file(
    input_path: str | os.PathLike,
    out_path: str | os.PathLike,
    translator: Translator,
    *,
    src: str = "en",
    via: str = "de",
    cache: TranslationCache | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> int:
    """Write the paraphrase of each line of ``input_path`` to the same line of ``out_path``; returns the
    number of lines.

    Lines go through :func:`back_translate` in chunks of ``batch_size``, each chunk's translations being
    committed to ``cache`` before the next chunk: rerun the same command after an interruption and only the
    untranslated lines are sent to the models. ``out_path`` appears only when every line is done (it is
    written atomically). Blank lines stay blank.
    """
    from tqdm.auto import tqdm

    from textcl._io import atomic_path

    lines = read_lines(input_path)
    with atomic_path(out_path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        with tqdm(total=len(lines), unit="line", desc=f"back-translate via {via}", disable=not progress) as bar:
            for start in range(0, len(lines), batch_size):
                chunk = lines[start : start + batch_size]
                paraphrases = back_translate(
                    chunk, translator, src=src, via=via, cache=cache, batch_size=batch_size
                )
                fh.writelines(p + "\n" for p in paraphrases)
                bar.update(len(chunk))
    return len(lines)


class BackTranslation(TextAugmenter):
    """View = the text translated to ``via`` and back (a paraphrase); ``seeds`` are not used.

    Translation is deterministic (greedy decoding by default), so a text always gets the same paraphrase,
    which is why the cache can hold it. For training, precompute the paraphrases once with
    ``textcl augment backtranslate --input corpus.txt --via de --out paraphrases.txt --cache bt.sqlite``
    and point this augmenter at the same cache with ``on_miss="original"``: no model is loaded then.

    Args:
        translator: any :class:`Translator`; default: :meth:`HFTranslator.pivot` with the models below.
        src, via: the language of the texts and the pivot language.
        cache: a :class:`TranslationCache` or the path of its database; ``None``: no cache.
        model_forward, model_backward: the default translator's models (default: opus-mt
            ``{src}-{via}`` and ``{via}-{src}``).
        batch_size, device: the default translator's generation batch size and device.
        on_miss: what to do with a text missing from the cache: ``"translate"`` it, keep the
            ``"original"`` text as its view, or raise an ``"error"``.
    """

    name = "back_translation"

    def __init__(
        self,
        translator: Translator | None = None,
        *,
        src: str = "en",
        via: str = "de",
        cache: TranslationCache | str | os.PathLike | None = None,
        model_forward: str | None = None,
        model_backward: str | None = None,
        batch_size: int = 32,
        device: str | None = None,
        on_miss: str = "translate",
    ):
        if not isinstance(src, str) or not isinstance(via, str) or src == via:
            raise ConfigError("via", f"must be a language code other than src ({src!r}), got {via!r}")
        self.src, self.via = src, via
        self.on_miss = check_choice("on_miss", on_miss, ON_MISS)
        if on_miss != "translate" and cache is None:
            raise ConfigError("cache", f"on_miss {on_miss!r} reads precomputed paraphrases: give a cache path")
        self.cache = TranslationCache(cache) if isinstance(cache, (str, os.PathLike)) else cache
        self.batch_size = batch_size
        self._custom_translator = translator is not None
        self.translator = translator or HFTranslator.pivot(
            src, via, model_forward, model_backward, batch_size=batch_size, device=device
        )
        self._defaults = {"model_forward": model_forward, "model_backward": model_backward, "device": device}

    def augment_one(self, text: str, rng: SeedStream) -> str:
        return self([text], [0])[0]

    def __call__(self, texts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        check_seeds(texts, seeds)
        if self.on_miss == "translate":
            views = back_translate(
                texts, self.translator, src=self.src, via=self.via, cache=self.cache, batch_size=self.batch_size
            )
        else:
            views = self._from_cache(texts)
        return [t if is_blank(v) else v for t, v in zip(texts, views)]

    def _from_cache(self, texts: Sequence[str]) -> list[str]:
        assert self.cache is not None
        fwd = self.cache.get_many(texts, translator_id(self.translator, self.src, self.via), f"{self.src}-{self.via}")
        pivots = [p if p is not None else "" for p in fwd]
        back = self.cache.get_many(
            pivots, translator_id(self.translator, self.via, self.src), f"{self.via}-{self.src}"
        )
        views = []
        for text, b in zip(texts, back):
            if b is None and not is_blank(text):
                if self.on_miss == "error":
                    raise LookupError(
                        f"no cached back-translation via {self.via!r} for {text[:60]!r}; precompute it with "
                        "`textcl augment backtranslate`"
                    )
                b = text
            views.append(b or text)
        return views

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"src": self.src, "via": self.via}
        opts["cache"] = self.cache.path if self.cache is not None else None
        if not self._custom_translator:
            opts.update(self._defaults)
        opts.update(batch_size=self.batch_size, on_miss=self.on_miss)
        return opts
