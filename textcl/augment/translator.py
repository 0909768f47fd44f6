"""The ``Translator`` protocol, and ``HFTranslator``: an adapter for Hugging Face seq2seq translation models."""
from __future__ import annotations

import os
from typing import Any, Mapping, Protocol, runtime_checkable

from textcl.errors import ConfigError, ModelNotFoundError


@runtime_checkable
class Translator(Protocol):
    """Anything that translates a batch: ``translator(texts, src, tgt) -> translations``.

    ``src`` and ``tgt`` are language codes (``"en"``, ``"de"``); the result has one string per input, in
    order. A translator may expose ``model_id(src, tgt) -> str``, the name under which its translations are
    cached (otherwise its ``name`` attribute, else its class name, is used).
    """

    def __call__(self, texts: list[str], src: str, tgt: str) -> list[str]: ...


def translator_id(translator: Any, src: str, tgt: str) -> str:
    """The model name that keys ``translator``'s outputs in a :class:`TranslationCache`."""
    model_id = getattr(translator, "model_id", None)
    if callable(model_id):
        return str(model_id(src, tgt))
    return str(getattr(translator, "name", None) or type(translator).__qualname__)


def opus_mt_name(src: str, tgt: str) -> str:
    """The hub name of the Helsinki-NLP opus-mt model from ``src`` to ``tgt``."""
    return f"Helsinki-NLP/opus-mt-{src}-{tgt}"


class HFTranslator:
    """Translate with Hugging Face seq2seq models (MarianMT, mBART, T5, …), one model per direction.

    Models load lazily on their first batch, with ``AutoTokenizer`` and ``AutoModelForSeq2SeqLM``, from a
    local folder or a hub name. Generation runs in batches of ``batch_size`` under ``torch.inference_mode``.

    Args:
        models: ``{(src, tgt): name_or_path}``, e.g. ``{("en", "de"): "Helsinki-NLP/opus-mt-en-de"}``.
        batch_size: sentences per ``generate`` call.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, …; default: CUDA when available, else CPU.
        max_length: inputs are truncated to this many tokens; outputs get at most this many new tokens.
        num_beams: beam width (1: greedy decoding, deterministic).

    Example::

        >>> translator = HFTranslator.pivot("en", "de")   # opus-mt-en-de and opus-mt-de-en
        >>> translator(["The cat sat on the mat."], "en", "de")
    """

    def __init__(
        self,
        models: Mapping[tuple[str, str], str | os.PathLike],
        *,
        batch_size: int = 32,
        device: str | None = None,
        max_length: int = 256,
        num_beams: int = 1,
    ):
        if not models:
            raise ConfigError("models", "needs at least one (src, tgt) -> model entry")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError("batch_size", f"must be an integer >= 1, got {batch_size!r}")
        self.models = {tuple(k): os.fspath(v) for k, v in models.items()}
        self.batch_size = batch_size
        self.device = device
        self.max_length = max_length
        self.num_beams = num_beams
        self._loaded: dict[tuple[str, str], tuple[Any, Any]] = {}

    @classmethod
    def pivot(
        cls,
        src: str = "en",
        via: str = "de",
        forward: str | os.PathLike | None = None,
        backward: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> "HFTranslator":
        """A round-trip pair ``src → via → src``; default models are ``Helsinki-NLP/opus-mt-{src}-{via}``
        and ``Helsinki-NLP/opus-mt-{via}-{src}``."""
        return cls(
            {(src, via): forward or opus_mt_name(src, via), (via, src): backward or opus_mt_name(via, src)},
            **kwargs,
        )

    def model_id(self, src: str, tgt: str) -> str:
        try:
            return self.models[(src, tgt)]
        except KeyError:
            known = ", ".join(f"{s}->{t}" for s, t in self.models)
            raise ConfigError("models", f"no model translates {src}->{tgt}; this translator has {known}") from None

    def _load(self, src: str, tgt: str) -> tuple[Any, Any]:
        key = (src, tgt)
        if key not in self._loaded:
            import torch
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            name = self.model_id(src, tgt)
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            try:
                tokenizer = AutoTokenizer.from_pretrained(name)
                model = AutoModelForSeq2SeqLM.from_pretrained(name)
            except (OSError, ValueError) as exc:
                raise ModelNotFoundError(
                    f"cannot load the {src}->{tgt} translation model {name!r} (tried it as a local folder "
                    f"and as a Hugging Face hub name): {exc}"
                ) from exc
            model.to(device).eval()
            self._loaded[key] = (tokenizer, model)
        return self._loaded[key]

    def __call__(self, texts: list[str], src: str, tgt: str) -> list[str]:
        import torch

        if not texts:
            return []
        tokenizer, model = self._load(src, tgt)
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(
                list(texts[start : start + self.batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            ).to(model.device)
            with torch.inference_mode():
                generated = model.generate(
                    **batch, max_new_tokens=self.max_length, num_beams=self.num_beams, do_sample=False
                )
            out.extend(tokenizer.batch_decode(generated, skip_special_tokens=True))
        return [t.strip() for t in out]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_loaded"] = {}  # a copy sent to another process loads its own models
        return state
