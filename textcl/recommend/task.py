"""A recommendation task from an interaction log: the training rows of the next-item loss and the ranking sets
that evaluate it (``data.kind: interactions``).

- **Items** are texts: the catalogue's fields through ``data.interactions.template``.
- **Users** are texts too: their last ``history`` items, most recent first, joined by ``separator``. One encoder
  embeds both (the user tower is the item tower reading a history).
- **Training rows**: for every user and every position ``t >= 1`` of their training sequence, the history
  before ``t`` and the item at ``t``, with the item's id, the user and ``t`` (the accidental-hit mask reads the
  whole sequence before ``t``).
- **Ranking sets** (leave-one-out in time order, :mod:`textcl.recommend.split`): ``NAME-valid`` (history: the
  training items; target: the validation item) selects the best step; ``NAME-test`` (history: training items
  and the validation item) and, with ``cold_fraction``, ``NAME-cold`` (the users whose test item was held out of
  training) are reported. Every item of the catalogue is ranked; every item the user picked before the target
  is left out of the ranking (cold items too, though the history text leaves them out), the target never.
- **logQ** (:func:`rows_logq`) is each item's share of the positives of the rows a run trains on (the items that
  stand in a batch as a row's item), Yi et al. 2019's in-batch sampling probability.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from textcl.data.records import Example
from textcl.errors import TextclError


@dataclass
class RankingSet:
    """One evaluation stage: ``histories[u]`` (a text) should rank item ``targets[u]`` high among all items,
    ``seen[u]`` (item indices) left out."""

    name: str
    histories: list[str]
    targets: np.ndarray  #: (U,) int64 item indices
    seen: list[list[int]]
    #: each user's last ``history`` item indices in time order (the items of their history text)
    recent: list[list[int]] | None = None
    users: list[str] | None = None  #: the user ids, in the order of the rows
    history_items: list[list[str]] | None = None  #: each user's whole history (item ids, time order)


class InteractionTask:
    """The loaded log, catalogue and split of a run with ``data.kind: interactions``."""

    def __init__(self, name: str, item_ids: list[str], item_texts: list[str], train: dict, valid: dict, test: dict,
                 history: int, separator: str, cold_items: set | None = None, cold_test: dict | None = None,
                 cold_histories: dict | None = None, full=None):
        """``full``: the leave-one-out :class:`~textcl.recommend.split.Split` of the whole log (cold items kept),
        whose histories are the items each ranking leaves out; None when nothing is held out (the split itself).
        """
        self.name = name
        self.item_ids, self.item_texts = item_ids, item_texts
        self.index = {item: i for i, item in enumerate(item_ids)}
        self.train, self.valid, self.test = train, valid, test
        self.history, self.separator = history, separator
        self.cold_items = cold_items or set()
        self.repeated_rows = 0  #: log rows that repeated an earlier row's user, item and time (counted once)
        from textcl.recommend.split import Split, item_counts

        split = Split(train, valid, test)
        full = full or split
        self.counts = item_counts(split)
        if not self.counts:
            raise TextclError(f"{name}: no training interactions (every user has fewer than 3)")
        if not valid or not test:
            raise TextclError(f"{name}: no user has a {'validation' if not valid else 'test'} item to rank (a user "
                              f"needs 3 interactions, and items not held out); expected a log with longer histories")
        #: user -> item -> the item's first position in the user's training sequence (the accidental-hit mask)
        self.first_at = {user: {} for user in train}
        for user, items in train.items():
            for t, item in enumerate(items):
                self.first_at[user].setdefault(item, t)
        self.sets = {"valid": self._set("valid", {u: train[u] for u in valid}, valid,
                                        {u: full.history(u, "valid") for u in valid}),
                     "test": self._set("test", {u: train[u] + [valid[u]] for u in test}, test,
                                       {u: full.history(u, "test") for u in test})}
        if cold_test:
            self.sets["cold"] = self._set("cold", cold_histories, cold_test,
                                          {u: full.history(u, "test") for u in cold_test})

    # ------------------------------------------------------------------ texts
    def history_text(self, items: list[str]) -> str:
        """The user's text: the last ``history`` of ``items`` (time order, most recent last), most recent first."""
        from textcl.models.recommend_settings import user_text

        return user_text([self.item_texts[self.index[i]] for i in items[-self.history:]], self.history,
                         self.separator)

    def _set(self, stage: str, histories: dict, targets: dict, seen: dict) -> RankingSet:
        """``histories[u]``: what the user's text is made of; ``seen[u]``: every item they picked before the
        target (left out of the ranking)."""
        users = sorted(targets, key=_natural)
        return RankingSet(f"{self.name}-{stage}", [self.history_text(histories[u]) for u in users],
                          np.asarray([self.index[targets[u]] for u in users], dtype=np.int64),
                          [sorted({self.index[i] for i in seen[u]} - {self.index[targets[u]]}) for u in users],
                          [[self.index[i] for i in histories[u][-self.history:]] for u in users],
                          users, [list(histories[u]) for u in users])

    # ------------------------------------------------------------------ training rows
    def examples(self) -> list[Example]:
        """One row per (user, position t >= 1) of the training sequences: history before t -> item at t."""
        rows = []
        for user in sorted(self.train, key=_natural):
            seq = self.train[user]
            for t in range(1, len(seq)):
                before = seq[max(0, t - self.history):t]
                rows.append(Example(anchor=self.history_text(before), positive=self.item_texts[self.index[seq[t]]],
                                    item=seq[t], user=user, position=t))
        if not rows:
            raise TextclError(f"{self.name}: no training rows (every user's training sequence has one item)")
        return rows

    # ------------------------------------------------------------------ serving
    def write_items(self, out: Path) -> None:
        """What ``textcl serve``'s ``/recommend`` needs beside the trained model (whose folder holds
        :meth:`settings_files`): ``OUT/items.jsonl``, the catalogue as documents to index (``textcl index build
        --input OUT/items.jsonl --model MODEL --out INDEX``; serve it with ``textcl serve INDEX``)."""
        import json

        from textcl._io import atomic_write_text

        atomic_write_text(Path(out) / "items.jsonl", "".join(
            json.dumps({"id": item, "text": text}, ensure_ascii=False) + "\n"
            for item, text in zip(self.item_ids, self.item_texts)))

    def settings_files(self) -> dict[str, dict]:
        """``{"textcl_recommend.json": ...}``: how ``/recommend`` turns a history into this task's user text,
        for ``Encoder.save(..., extra_json=...)`` (every model folder a run writes has it, written inside the
        folder's atomic rename: ``model/``, ``best-model/`` and the checkpoints' copies)."""
        from textcl.models.recommend_settings import settings_files

        return settings_files(self.history, self.separator)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, encoder, stage: str, *, n_bootstrap: int = 0, batch_size: int = 64,
                 user: str = "text") -> dict:
        """``{score (NDCG@10 x100), ndcg@10, recall@10, mrr@10 (fractions), n, metric[, ci95]}`` of ``stage``,
        every catalogue item ranked by cosine to the user's embedding: ``user="text"`` encodes the history text
        (what training optimises); ``"mean"`` averages the item embeddings of the same recent items, (U, d)."""
        s = self.sets[stage]
        items = torch.from_numpy(np.asarray(encoder.encode(self.item_texts, batch_size=batch_size, normalize=True)))
        if user == "text":
            users = torch.from_numpy(np.asarray(encoder.encode(s.histories, batch_size=batch_size, normalize=True)))
        elif user == "mean":
            users = torch.stack([items[torch.as_tensor(r, dtype=torch.long)].float().mean(0) for r in s.recent])
            users = torch.nn.functional.normalize(users, dim=-1)
        else:
            raise ValueError(f"user: expected 'text' or 'mean', got {user!r}")
        return stage_metrics(users.float() @ items.float().T, s, n_bootstrap)


def stage_metrics(scores: torch.Tensor, s: RankingSet, n_bootstrap: int = 0) -> dict:
    """``{score (NDCG@10 x100), ndcg@10, recall@10, mrr@10 (fractions), n, metric[, ci95, ci95_by_metric]}`` of
    ``scores`` (U, n_items), each user's row of ranking set ``s``: the target's rank among every item, the
    user's ``seen`` items left out (the target never), ties against it."""
    from textcl.recommend.metrics import rank_of_target, ranking_metrics

    exclude = [torch.as_tensor(x, dtype=torch.long) for x in s.seen]
    ranks = rank_of_target(scores, torch.from_numpy(s.targets), exclude)
    m = ranking_metrics(ranks, k=10, n_bootstrap=n_bootstrap)
    out = {"score": 100.0 * m["ndcg@10"], "metric": "NDCG@10 x100", "n": m["n_users"],
           **{k: m[k] for k in ("ndcg@10", "recall@10", "mrr@10")}}
    if n_bootstrap and "ci95" in m:
        out["ci95"] = [100.0 * x for x in m["ci95"]["ndcg@10"]]
        out["ci95_by_metric"] = m["ci95"]
    return out


def rows_logq(examples) -> dict[str, float]:
    """item -> log of its share of ``examples``' items (the training rows' positives, after any
    ``data.max_examples`` sample): the in-batch sampling probability the logQ correction subtracts."""
    from collections import Counter

    from textcl.recommend.split import log_sampling_probability

    counts = Counter(e.item for e in examples)
    return log_sampling_probability(counts, counts) if counts else {}


def _natural(user: str):
    """Ids of ASCII digits in numeric order (compared as digit strings, so any length sorts without converting
    it), others after them in text order."""
    if user.isascii() and user.isdigit():
        digits = user.lstrip("0")
        return (0, len(digits), digits, user)
    return (1, 0, user, user)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, items: str | None, template: str, history: int, separator: str, cold_fraction: float,
                 cold_seed: int, name: str | None) -> InteractionTask:
    from textcl.data.interactions import ml100k_files, read_catalogue, read_interactions
    from textcl.recommend.split import cold_split, leave_one_out

    if path == "packaged:ml100k":
        inter_path, item_path = ml100k_files()
        default_name = "ml100k"
    else:
        inter_path, default_name = Path(path).expanduser(), Path(path).stem
    item_path = Path(items).expanduser() if items is not None else item_path
    log = read_interactions(inter_path)
    catalogue = read_catalogue(item_path, template)
    unknown = sorted({x.item for x in log} - set(catalogue), key=_natural)
    if unknown:
        raise TextclError(f"{inter_path}: item {unknown[0]!r} (and {len(unknown) - 1} more) is not in the catalogue "
                          f"{item_path}")
    item_ids = sorted(catalogue, key=_natural)
    texts = [catalogue[i] for i in item_ids]
    task_name = name or default_name
    if cold_fraction > 0:
        split, cold, cold_test, cold_hist = cold_split(log, fraction=cold_fraction, seed=cold_seed)
        task = InteractionTask(task_name, item_ids, texts, split.train, split.valid, split.test, history, separator,
                               cold_items=cold, cold_test=cold_test, cold_histories=cold_hist, full=leave_one_out(log))
    else:
        split = leave_one_out(log)
        task = InteractionTask(task_name, item_ids, texts, split.train, split.valid, split.test, history, separator)
    task.repeated_rows = len(log) - len({(x.user, x.item, x.timestamp) for x in log})
    return task


def load_task(data_config) -> InteractionTask:
    """The task of ``data_config`` (a :class:`~textcl.config.DataConfig` with ``kind: interactions``), loaded
    once per process for the same settings."""
    it = data_config.interactions
    return _load_cached(str(data_config.path), None if it.items is None else str(it.items), it.template, it.history,
                        it.separator, float(it.cold_fraction), int(it.cold_seed), it.name)
