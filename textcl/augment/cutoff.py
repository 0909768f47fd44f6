"""``TokenCutoff``: ConSERT's token cutoff at the input-id level, applied *after* tokenization."""
from __future__ import annotations


from typing import Any, Sequence

from textcl.augment.base import check_choice, check_probability, check_seeds
from textcl.augment.rng import SeedStream
from textcl.errors import ConfigError

MODES = ("mask", "drop", "attention")


class TokenCutoff:
    """Cut ``round(rate * n)`` of the ``n`` real (non-padding, non-special) tokens of each sequence.

    Unlike the text augmenters it takes token ids, so it runs after the tokenizer; ``token_level = True``
    tells the trainer so. At least one real token always survives.

    Modes:
        - ``"mask"``: the cut tokens become ``mask_token_id`` (attention unchanged);
        - ``"drop"``: the cut tokens are removed, the rest shift left and the row is right-padded with
          ``pad_token_id`` (attention 0 on padding);
        - ``"attention"``: ids unchanged, attention 0 on the cut tokens: the closest input-level match to
          ConSERT zeroing those tokens' embeddings.

    Args:
        rate: the fraction of real tokens to cut, in ``[0, 1)``.
        mode: ``"mask"``, ``"drop"`` or ``"attention"``.
        mask_token_id: the id written by ``"mask"``.
        pad_token_id: the padding id written by ``"drop"`` (default 0).
        special_token_ids: ids never cut (``[CLS]``, ``[SEP]``, …).
        Unset ids are filled from a tokenizer by :meth:`with_tokenizer` (or :meth:`from_tokenizer`).

    Call: ``(input_ids, attention_mask, seeds) -> (input_ids, attention_mask)``, with ``input_ids`` and
    ``attention_mask`` integer tensors of shape ``(B, L)`` and one seed per row; returns new tensors of the
    same shape, dtype and device. Row ``b`` depends only on row ``b`` and ``seeds[b]``.

    Example::

        >>> cutoff = TokenCutoff.from_tokenizer(tokenizer, rate=0.15, mode="mask")
        >>> batch = tokenizer(texts, padding=True, return_tensors="pt")
        >>> ids, mask = cutoff(batch["input_ids"], batch["attention_mask"], seeds)
    """

    name = "token_cutoff"
    token_level = True

    def __init__(
        self,
        rate: float = 0.15,
        mode: str = "mask",
        mask_token_id: int | None = None,
        pad_token_id: int | None = None,
        special_token_ids: Sequence[int] | None = None,
    ):
        self.rate = check_probability("rate", rate, allow_one=False)
        self.mode = check_choice("mode", mode, MODES)
        for field, value in (("mask_token_id", mask_token_id), ("pad_token_id", pad_token_id)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(field, f"must be a token id (an integer >= 0), got {value!r}")
        self.mask_token_id = mask_token_id
        self.pad_token_id = pad_token_id
        self.special_token_ids = None if special_token_ids is None else frozenset(int(i) for i in special_token_ids)

    def with_tokenizer(self, tokenizer: Any) -> "TokenCutoff":
        """A copy whose unset token ids (mask, padding, specials) come from a Hugging Face tokenizer.

        A recipe's ``token_cutoff: {rate: 0.15}`` names no ids; the trainer binds its tokenizer this way.
        """
        special = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
        mask_id = self.mask_token_id if self.mask_token_id is not None else tokenizer.mask_token_id
        if self.mode == "mask" and mask_id is None:
            raise ConfigError(
                "mask_token_id", f"mode 'mask' needs a mask token, and {type(tokenizer).__name__} has none"
            )
        return TokenCutoff(
            rate=self.rate,
            mode=self.mode,
            mask_token_id=mask_id,
            pad_token_id=self.pad_token_id if self.pad_token_id is not None else (tokenizer.pad_token_id or 0),
            special_token_ids=(
                self.special_token_ids if self.special_token_ids is not None
                else sorted(i for i in special if i is not None)
            ),
        )

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, rate: float = 0.15, mode: str = "mask") -> "TokenCutoff":
        """Take the mask, padding and special token ids from a Hugging Face tokenizer."""
        return cls(rate=rate, mode=mode).with_tokenizer(tokenizer)

    def __call__(self, input_ids, attention_mask, seeds: Sequence[int]):
        import torch

        if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
            raise ValueError(
                f"input_ids and attention_mask must both be (B, L); got {tuple(input_ids.shape)} "
                f"and {tuple(attention_mask.shape)}"
            )
        check_seeds(input_ids, seeds)
        if self.mode == "mask" and self.mask_token_id is None:
            raise ValueError("TokenCutoff(mode='mask') has no mask_token_id: bind one with .with_tokenizer(tokenizer)")
        special = self.special_token_ids or frozenset()
        pad_id = self.pad_token_id or 0
        ids_rows = input_ids.tolist()
        mask_rows = attention_mask.tolist()
        for b, seed in enumerate(seeds):
            ids, mask = ids_rows[b], mask_rows[b]
            real = [j for j, (t, m) in enumerate(zip(ids, mask)) if m and t not in special]
            k = min(round(self.rate * len(real)), len(real) - 1)
            if k <= 0:
                continue
            cut = set(SeedStream.from_seed(seed).sample(real, k))
            if self.mode == "mask":
                for j in cut:
                    ids[j] = self.mask_token_id
            elif self.mode == "attention":
                for j in cut:
                    mask[j] = 0
            else:
                kept = [t for j, (t, m) in enumerate(zip(ids, mask)) if m and j not in cut]
                pad = len(ids) - len(kept)
                ids_rows[b] = kept + [pad_id] * pad
                mask_rows[b] = [1] * len(kept) + [0] * pad
        return (
            torch.tensor(ids_rows, dtype=input_ids.dtype, device=input_ids.device),
            torch.tensor(mask_rows, dtype=attention_mask.dtype, device=attention_mask.device),
        )

    def options(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "mode": self.mode,
            "mask_token_id": self.mask_token_id,
            "pad_token_id": self.pad_token_id,
            "special_token_ids": None if self.special_token_ids is None else sorted(self.special_token_ids),
        }

    def get_config(self) -> dict[str, Any]:
        return {self.name: self.options()}

    def __repr__(self) -> str:
        return f"TokenCutoff({', '.join(f'{k}={v!r}' for k, v in self.options().items())})"
