"""False-negative masks: keep duplicates and same-group items out of the negatives.

Large in-batch (and gathered, and queued) negative sets keep containing the same text twice, or two
paraphrases of one source (a *group*). Treating those as negatives pushes apart things that should be close.
The helpers here turn integer keys into a boolean mask where ``True`` means "do not use this candidate as a
negative". The positive itself is never masked.

Group ids are non-negative; :data:`NO_GROUP` (-1) marks a row in no group and is the only negative value
allowed. :func:`group_keys` builds them from group names, and every function that reads group ids refuses any
other negative value, so a signed hash can never silently turn half of the groups into "no group".
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from textcl.text import normalize_text

__all__ = ["NO_GROUP", "text_keys", "group_keys", "check_group_ids", "false_negative_mask"]

#: The group id of a row that is in no group; group ids are otherwise non-negative.
NO_GROUP = -1


def text_keys(texts: Sequence[str], *, normalize: bool = False) -> torch.LongTensor:
    """Hash texts to int64 keys that are equal for equal texts, in every process and on every run.

    Uses the first 8 bytes of BLAKE2b (Python's ``hash()`` is salted per process, so two ranks would disagree).

    Args:
        texts: the strings.
        normalize: compare case-insensitively and ignore surrounding/multiple whitespace.

    Returns:
        ``(len(texts),)`` int64 tensor on the CPU.

    Example:
        >>> k = text_keys(["a cat", "a dog", "a cat"])
        >>> bool(k[0] == k[2]), bool(k[0] == k[1])
        (True, False)
    """
    if isinstance(texts, str):
        raise TypeError("texts: expected a sequence of strings, got a single str")
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}]: expected str, got {type(text).__name__}")
        if normalize:
            text = normalize_text(text)
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
        out.append(int.from_bytes(digest, "little", signed=True))
    return torch.tensor(out, dtype=torch.long)


def group_keys(groups: Sequence[str | None]) -> torch.LongTensor:
    """Group ids for group names: equal names give equal ids (in every process and on every run), ``None``
    gives :data:`NO_GROUP`, and every other id is non-negative (a 63-bit BLAKE2b hash).

    Args:
        groups: one group name per row, or None for a row in no group.

    Returns:
        ``(len(groups),)`` int64 tensor on the CPU.

    Example:
        >>> g = group_keys(["t1", None, "t1"])
        >>> bool(g[0] == g[2]), int(g[1]) == NO_GROUP, bool(g[0] >= 0)
        (True, True, True)
    """
    if isinstance(groups, str):
        raise TypeError("groups: expected a sequence of group names, got a single str")
    out = []
    for i, name in enumerate(groups):
        if name is None:
            out.append(NO_GROUP)
            continue
        if not isinstance(name, str):
            raise TypeError(f"groups[{i}]: expected str or None, got {type(name).__name__}")
        digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
        out.append(int.from_bytes(digest, "little") >> 1)  # 63 bits: never negative
    return torch.tensor(out, dtype=torch.long)


def check_group_ids(name: str, ids: torch.Tensor | None) -> None:
    """Raise ``ValueError`` naming ``name`` if ``ids`` holds a negative value other than :data:`NO_GROUP`."""
    if ids is None:
        return
    bad = (ids < 0) & (ids != NO_GROUP)
    if bool(bad.any()):
        value = int(ids[bad][0])
        raise ValueError(f"{name}: group ids must be >= 0, or NO_GROUP ({NO_GROUP}) for a row in no group; got "
                         f"{value} (build them with textcl.losses.group_keys, not a signed hash such as text_keys)")


def _check_1d(name: str, t: torch.Tensor | None, n: int | None = None) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor) or t.dim() != 1:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name}: expected a 1-D tensor, got {shape}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name}: expected length {n}, got {t.shape[0]}")


def false_negative_mask(
    positive_keys: torch.Tensor | None,
    candidate_keys: torch.Tensor | None,
    group_ids: torch.Tensor | None = None,
    *,
    anchor_keys: torch.Tensor | None = None,
    candidate_group_ids: torch.Tensor | None = None,
    positive_offset: int | None = 0,
) -> torch.BoolTensor:
    """Mask of candidates that must not serve as negatives for each anchor.

    Candidate ``c`` is masked for anchor ``i`` when

    * its key equals the key of anchor ``i``'s positive (the same text again), or
    * ``anchor_keys`` is given and its key equals anchor ``i``'s own key, or
    * ``group_ids`` is given and its group equals anchor ``i``'s group (negative group ids mean "no group" and
      never match),

    except the positive column itself, ``positive_offset + i``, which is never masked.

    Args:
        positive_keys: ``(B,)`` int keys of each anchor's positive (e.g. :func:`text_keys`), or None.
        candidate_keys: ``(C,)`` int keys of the candidates in the logits' column order, or None.
        group_ids: ``(B,)`` group of each anchor (:func:`group_keys`; :data:`NO_GROUP` for none).
            ``candidate_group_ids`` defaults to ``group_ids`` when the candidates are the (same, local)
            positives, i.e. when ``C == B``.
        anchor_keys: ``(B,)`` keys of the anchors themselves (optional).
        candidate_group_ids: ``(C,)`` group of each candidate; :data:`NO_GROUP` for none.
        positive_offset: column of anchor 0's positive; anchor ``i``'s is ``positive_offset + i``. With
            gathered candidates this is the rank's offset in the global batch. None: no column is a positive
            (e.g. a block of queue entries).

    Returns:
        ``(B, C)`` bool tensor, ``True`` = excluded from the negatives.

    Example:
        >>> keys = torch.tensor([7, 8, 7])            # texts 0 and 2 are identical
        >>> false_negative_mask(keys, keys).tolist()
        [[False, False, True], [False, False, False], [True, False, False]]
    """
    if positive_keys is None and group_ids is None:
        raise ValueError("positive_keys: give positive_keys (with candidate_keys) or group_ids, or both")
    if (positive_keys is None) != (candidate_keys is None):
        raise ValueError("candidate_keys: positive_keys and candidate_keys must be given together")
    ref = positive_keys if positive_keys is not None else group_ids
    _check_1d("positive_keys", positive_keys)
    b = ref.shape[0] if isinstance(ref, torch.Tensor) else None
    _check_1d("group_ids", group_ids, b)
    _check_1d("anchor_keys", anchor_keys, b)
    _check_1d("candidate_keys", candidate_keys)
    if group_ids is not None and candidate_group_ids is None:
        if candidate_keys is not None and candidate_keys.shape[0] != b:
            raise ValueError(
                "candidate_group_ids: required when the candidates are not the anchors' own positives "
                f"(C={candidate_keys.shape[0]} != B={b})"
            )
        candidate_group_ids = group_ids
    _check_1d("candidate_group_ids", candidate_group_ids)
    check_group_ids("group_ids", group_ids)
    check_group_ids("candidate_group_ids", candidate_group_ids)
    c = candidate_keys.shape[0] if candidate_keys is not None else candidate_group_ids.shape[0]
    if candidate_keys is not None and candidate_group_ids is not None and candidate_group_ids.shape[0] != c:
        raise ValueError(
            f"candidate_group_ids: expected length {c} (as candidate_keys), got {candidate_group_ids.shape[0]}")

    return _mask(b, c, [positive_keys, anchor_keys], candidate_keys, group_ids, candidate_group_ids, positive_offset,
                 device=ref.device)


def _mask(n, c, row_keys, candidate_keys, row_groups, candidate_groups, positive_offset, *, device) -> torch.Tensor:
    """The unchecked core of :func:`false_negative_mask`: any of ``row_keys`` (each ``(n,)`` or None) equal to
    the candidate's key, or equal groups other than :data:`NO_GROUP`; the positive column cleared."""
    mask = torch.zeros(n, c, dtype=torch.bool, device=device)
    if candidate_keys is not None:
        cand = candidate_keys.to(device)[None, :]
        for keys in row_keys:
            if keys is not None:
                mask |= keys.to(device)[:, None] == cand
    if row_groups is not None and candidate_groups is not None:
        rg, cg = row_groups.to(device)[:, None], candidate_groups.to(device)[None, :]
        mask |= (rg == cg) & (rg != NO_GROUP) & (cg != NO_GROUP)
    if positive_offset is not None:
        if not 0 <= positive_offset <= c - n:
            raise ValueError(f"positive_offset: {positive_offset} puts positives outside the {c} candidates")
        rows = torch.arange(n, device=device)
        mask[rows, rows + positive_offset] = False
    return mask
