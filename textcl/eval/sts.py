"""STS evaluation: encode each unique sentence once, score pairs, correlate with gold scores.

Scores follow SentEval/MTEB: Spearman and Pearson ×100 between gold scores and the similarity of the
two sentences' embeddings (cosine by default). With several sets, ``all`` is the correlation over the
concatenation of every set's pairs (SentEval's "all" setting).

A set whose correlation is undefined (one pair, all gold scores equal, all predictions equal) reports NaN
(``null`` in JSON) with the reason under ``"undefined"``, and is left out of ``all``, which lists it under
``"excluded"``.
"""
from __future__ import annotations

import os
from typing import Protocol, Sequence, Union

import numpy as np

from textcl.data.sts import STSData, load_sts
from textcl.eval.similarity import SIMILARITIES, paired_similarity
from textcl.eval.stats import N_BOOTSTRAP, bootstrap_ci, paired_bootstrap, pearson, spearman, undefined_reason

STSInput = Union[STSData, str, os.PathLike]


class SupportsEncode(Protocol):
    def encode(self, texts: Sequence[str], **kwargs) -> np.ndarray: ...


def as_sts_list(data: STSInput | Sequence[STSInput]) -> list[STSData]:
    items = [data] if isinstance(data, (STSData, str, os.PathLike)) else list(data)
    sets = [d if isinstance(d, STSData) else load_sts(d) for d in items]
    seen: dict[str, int] = {}
    for d in sets:  # two files with the same stem still get distinct names in the report
        if d.name in seen:
            seen[d.name] += 1
            d.name = f"{d.name}#{seen[d.name]}"
        else:
            seen[d.name] = 1
    return sets


def encode_unique(encoder: SupportsEncode, texts: Sequence[str], **encode_kwargs) -> tuple[np.ndarray, dict[str, int]]:
    """Encode each distinct text once. Returns (embeddings (u, d), text -> row)."""
    index: dict[str, int] = {}
    for t in texts:
        index.setdefault(t, len(index))
    emb = encoder.encode(list(index), **encode_kwargs)
    return emb, index


def sts_predictions(encoder: SupportsEncode, sets: list[STSData], *, similarity: str = "cosine",
                    **encode_kwargs) -> list[np.ndarray]:
    """Predicted similarity for each pair of each set: a list of (n_i,) arrays."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}; got {similarity!r}")
    texts = [t for d in sets for t in (*d.sentences1, *d.sentences2)]
    emb, index = encode_unique(encoder, texts, **encode_kwargs)
    preds = []
    for d in sets:
        a = emb[[index[t] for t in d.sentences1]]
        b = emb[[index[t] for t in d.sentences2]]
        preds.append(paired_similarity(a, b, similarity))
    return preds


def _metrics(gold: np.ndarray, pred: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    reason = undefined_reason(gold, pred)
    if reason:
        return {"spearman": float("nan"), "pearson": float("nan"), "n": int(len(gold)), "ci95": None,
                "undefined": reason}
    ci = None  # no resamples, no interval (JSON null)
    if n_bootstrap:
        low, high = bootstrap_ci(gold, pred, n_resamples=n_bootstrap, seed=seed)
        ci = [100.0 * low, 100.0 * high]
    return {
        "spearman": 100.0 * spearman(gold, pred),
        "pearson": 100.0 * pearson(gold, pred),
        "n": int(len(gold)),
        "ci95": ci,
    }


def _all(sets: list[STSData], per_set: dict, score, *preds: list[np.ndarray]) -> dict:
    """SentEval's "all": ``score(gold, *pred)`` over the concatenated pairs of the sets whose own correlation
    is defined; the others are named under ``"excluded"``."""
    keep = [i for i, d in enumerate(sets) if "undefined" not in per_set[d.name]]
    if keep:
        gold = np.concatenate([sets[i].scores for i in keep])
        m = score(gold, *(np.concatenate([p[i] for i in keep]) for p in preds))
    else:
        m = score(np.empty(0), *(np.empty(0) for _ in preds))
        m["undefined"] = "no set has a defined correlation"
    if len(keep) < len(sets):
        m["excluded"] = [d.name for i, d in enumerate(sets) if i not in keep]
    return m


def undefined_sets(report: dict) -> dict[str, str]:
    """Set name -> why its correlation is undefined, for each such set of a report."""
    return {name: m["undefined"] for name, m in report["sets"].items() if "undefined" in m}


def evaluate_sts(encoder: SupportsEncode, data: STSInput | Sequence[STSInput], *, similarity: str = "cosine",
                 batch_size: int = 64, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, **encode_kwargs) -> dict:
    """Evaluate ``encoder`` on one or more STS sets.

    Args:
        encoder: anything with ``encode(list[str]) -> (n, d) array`` (a textcl ``Encoder``, a SentenceTransformer).
        data: a named set (``stsb-test``), a file path, an :class:`STSData`, or a list of them.
        similarity: ``cosine``, ``dot``, ``euclidean`` or ``manhattan``.
        n_bootstrap: resamples for the 95% percentile CI of Spearman (0: no CI, ``ci95`` is None).

    Returns:
        ``{"model", "similarity", "sets": {name: {"spearman", "pearson", "n", "ci95": [low, high]}}}`` with
        correlations ×100, plus ``"all"`` (same fields) when there are several sets. An undefined
        correlation is NaN with ``"undefined": reason`` added; ``all`` then has ``"excluded": [names]``.
    """
    sets = as_sts_list(data)
    preds = sts_predictions(encoder, sets, similarity=similarity, batch_size=batch_size, **encode_kwargs)

    def score(gold, pred):
        return _metrics(gold, pred, n_bootstrap, seed)

    per_set = {d.name: score(d.scores, p) for d, p in zip(sets, preds)}
    report = {"model": getattr(encoder, "name", type(encoder).__name__), "similarity": similarity, "sets": per_set}
    if len(sets) > 1:
        report["all"] = _all(sets, per_set, score, preds)
    return report


def compare_sts(encoder_a: SupportsEncode, encoder_b: SupportsEncode, data: STSInput | Sequence[STSInput], *,
                similarity: str = "cosine", batch_size: int = 64, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0,
                **encode_kwargs) -> dict:
    """Paired bootstrap comparison of two encoders on the same pairs.

    Returns ``{"model_a", "model_b", "similarity", "sets": {name: {"spearman_a", "spearman_b", "diff",
    "ci95": [low, high], "p_value", "n"}}}`` (×100 except the p-value), plus ``"all"`` for several sets.
    Where either correlation is undefined, the test's fields are NaN (``ci95`` None) and ``"undefined"``
    says why (``"model B: ..."`` when one model's predictions are to blame); ``all`` excludes that set.
    """
    sets = as_sts_list(data)
    kw = dict(similarity=similarity, batch_size=batch_size, **encode_kwargs)
    preds_a = sts_predictions(encoder_a, sets, **kw)
    preds_b = sts_predictions(encoder_b, sets, **kw)

    def one(gold, pa, pb):
        reason = undefined_reason(gold)
        if reason is None:
            blame = [(label, undefined_reason(gold, p)) for label, p in (("A", pa), ("B", pb))]
            reason = "; ".join(f"model {label}: {r}" for label, r in blame if r) or None
        if reason:
            nan = float("nan")
            return {"spearman_a": 100.0 * spearman(gold, pa) if len(gold) else nan,
                    "spearman_b": 100.0 * spearman(gold, pb) if len(gold) else nan,
                    "diff": nan, "ci95": None, "p_value": nan, "n": int(len(gold)), "undefined": reason}
        test = paired_bootstrap(gold, pa, pb, n_resamples=n_bootstrap, seed=seed)
        return {"spearman_a": 100.0 * spearman(gold, pa), "spearman_b": 100.0 * spearman(gold, pb),
                "diff": 100.0 * test["diff"], "ci95": [100.0 * test["low"], 100.0 * test["high"]],
                "p_value": test["p_value"], "n": int(len(gold))}

    per_set = {d.name: one(d.scores, pa, pb) for d, pa, pb in zip(sets, preds_a, preds_b)}
    report = {"model_a": getattr(encoder_a, "name", "a"), "model_b": getattr(encoder_b, "name", "b"),
              "similarity": similarity, "sets": per_set}
    if len(sets) > 1:
        report["all"] = _all(sets, per_set, one, preds_a, preds_b)
    return report


def sts_notes(report: dict) -> list[str]:
    """One line per set whose correlation is undefined (``"x: the correlation is undefined: only 1 pair"``),
    and one for the sets ``all`` leaves out (``"all: x excluded (undefined correlation)"``)."""
    notes = [f"{name}: the correlation is undefined: {reason}" for name, reason in undefined_sets(report).items()]
    excluded = report.get("all", {}).get("excluded")
    if excluded:
        notes.append(f"all: {', '.join(excluded)} excluded (undefined correlation)")
    return notes


def _num(x: float, fmt: str, width: int) -> str:
    return (format(x, fmt) if np.isfinite(x) else "undefined").rjust(width)


def format_sts_table(report: dict) -> str:
    """A plain-text table of an :func:`evaluate_sts` or :func:`compare_sts` report, then its
    :func:`sts_notes`."""
    rows = list(report["sets"].items()) + ([("all", report["all"])] if "all" in report else [])
    if "model_a" in report:
        head = f"{'set':<14}{'n':>7}{'A':>11}{'B':>11}{'A-B':>11}{'95% CI of A-B':>20}{'p':>11}"
        lines = [f"A = {report['model_a']}", f"B = {report['model_b']}", head, "-" * len(head)]
        for name, m in rows:
            ci = f"[{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]" if m["ci95"] else "-"
            lines.append(f"{name:<14}{m['n']:>7}{_num(m['spearman_a'], '.2f', 11)}{_num(m['spearman_b'], '.2f', 11)}"
                         f"{_num(m['diff'], '+.2f', 11)}{ci:>20}{_num(m['p_value'], '.3f', 11)}")
    else:
        head = f"{'set':<14}{'n':>7}{'spearman':>11}{'pearson':>11}{'95% CI (spearman)':>21}"
        lines = [f"model = {report['model']}  similarity = {report['similarity']}", head, "-" * len(head)]
        for name, m in rows:
            ci = f"[{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]" if m["ci95"] else "-"
            lines.append(f"{name:<14}{m['n']:>7}{_num(m['spearman'], '.2f', 11)}{_num(m['pearson'], '.2f', 11)}"
                         f"{ci:>21}")
    return "\n".join(lines + sts_notes(report))
