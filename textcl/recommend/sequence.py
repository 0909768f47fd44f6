"""A sequence user tower over text item vectors (``data.interactions.user_tower: sequence``).

- **Item tower**: each item's text is embedded once by the frozen text encoder, ``x_i`` (D,); the item's vector
  is ``W x_i + e_i`` (d,), where ``e_i`` is a learned embedding of the item's id for the items seen in training
  and zero for the others. A cold item (never in training) is its text alone, through the same ``W``, so it
  is ranked from the first request on.
- **User tower**: a GRU (Hidden units) over the vectors of the user's last ``history`` items in time order,
  then a linear map back to d; the output after item ``t`` is the user's vector for the item at ``t + 1``.
- **Scores**: cosine between user and item vectors divided by the temperature; training is a softmax over
  every item seen in training (:func:`textcl.losses.next_item.sequence_softmax`), at every position of each
  window of a user's training sequence.

Padding is on the left with index -1: the last position of a row is its most recent item.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PAD = -1


@dataclass
class SequenceShape:
    """The tower's sizes: ``text_dim`` (D, the text encoder's), ``dim`` (d, the shared item/user space),
    ``hidden`` (the GRU's units), ``history`` (L, items a user's row holds), ``dropout`` (on the history's item
    vectors), ``id_embeddings`` (add ``e_i`` for the items seen in training)."""

    text_dim: int
    dim: int = 64
    hidden: int = 128
    history: int = 50
    dropout: float = 0.3
    id_embeddings: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class SequenceRecommender(nn.Module):
    """Scores every item for a user's history: ``scores(histories) -> (B, n)``.

    Buffers: ``text`` (n, D), the frozen text vectors of the catalogue; ``trained`` (n,) bool, the items seen in
    training (the ones with an id embedding and the training softmax's candidates)."""

    def __init__(self, shape: SequenceShape, text: torch.Tensor, trained: torch.Tensor):
        super().__init__()
        if text.dim() != 2 or text.shape[1] != shape.text_dim:
            raise ValueError(f"text: expected (n, {shape.text_dim}) item vectors, got {tuple(text.shape)}")
        if trained.shape != (text.shape[0],) or trained.dtype != torch.bool:
            raise ValueError(f"trained: expected ({text.shape[0]},) bool, got {tuple(trained.shape)} {trained.dtype}")
        self.shape = shape
        self.register_buffer("text", text.float().contiguous())
        self.register_buffer("trained", trained.clone())
        self.project = nn.Linear(shape.text_dim, shape.dim)
        self.ids = nn.Embedding(text.shape[0], shape.dim) if shape.id_embeddings else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=0.02)
        self.drop = nn.Dropout(shape.dropout)
        self.gru = nn.GRU(shape.dim, shape.hidden, batch_first=True)
        self.out = nn.Linear(shape.hidden, shape.dim)

    @property
    def n_items(self) -> int:
        return self.text.shape[0]

    def item_vectors(self) -> torch.Tensor:
        """(n, d): ``W x_i``, plus ``e_i`` for the items seen in training."""
        v = self.project(self.text)
        if self.ids is not None:
            v = v + self.ids.weight * self.trained[:, None].to(v.dtype)
        return v

    def user_vectors(self, histories: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d): the user's vector after each position of ``histories`` (B, L) item indices, left-padded
        with -1. ``items``: :meth:`item_vectors`, when already computed."""
        if histories.dim() != 2:
            raise ValueError(f"histories: expected (B, L) item indices, got {tuple(histories.shape)}")
        items = self.item_vectors() if items is None else items
        real = histories >= 0
        return self.users(items[histories.clamp(min=0)] * real[..., None].to(items.dtype))

    def users(self, h: torch.Tensor) -> torch.Tensor:
        """(B, L, d): the user's vector after each position of ``h`` (B, L, d), the history's item vectors in
        time order, left-padded with zero vectors."""
        return self.out(self.gru(self.drop(h))[0])

    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, n) cosine similarities of each history's last user vector to every item."""
        items = self.item_vectors()
        users = self.user_vectors(histories, items)[:, -1]
        return F.normalize(users, dim=-1) @ F.normalize(items, dim=-1).T


def left_pad(items: list[int], length: int) -> list[int]:
    """The last ``length`` of ``items``, left-padded with -1 to ``length``."""
    items = list(items)[-length:] if length > 0 else []
    return [PAD] * (length - len(items)) + items


def training_windows(sequences: list[list[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)``, each (W, L): each training sequence cut, from its end, into windows of ``L + 1``
    items; a window's inputs are its first L items and its targets the items after each (left-padded with -1).
    Every position ``t >= 1`` of every sequence is a target exactly once, predicted from at most L items
    before it."""
    inputs, targets = [], []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            window = seq[max(0, end - length - 1):end]
            inputs.append(left_pad(window[:-1], length))
            targets.append(left_pad(window[1:], length))
            end -= length
    if not inputs:
        return torch.empty(0, length, dtype=torch.long), torch.empty(0, length, dtype=torch.long)
    return torch.tensor(inputs, dtype=torch.long), torch.tensor(targets, dtype=torch.long)


@torch.no_grad()
def evaluate(model: SequenceRecommender, task, stage: str, n_bootstrap: int = 0) -> dict:
    """``{score (NDCG@10 x100), ndcg@10, recall@10, mrr@10, n, metric[, ci95]}`` of ``stage``: every item ranked
    for each user's history (the items of the ranking set, in time order), the user's earlier items left out."""
    from textcl.recommend.task import stage_metrics

    s = task.sets[stage]
    was = model.training
    model.eval()
    try:
        index = task.index
        rows = torch.tensor([left_pad([index[i] for i in h], model.shape.history) for h in s.history_items],
                            dtype=torch.long)
        scores = torch.cat([model.scores(rows[a:a + 512]) for a in range(0, len(rows), 512)])
    finally:
        model.train(was)
    return stage_metrics(scores, s, n_bootstrap)


def save(model: SequenceRecommender, path: Path, meta: dict) -> Path:
    """``path/recommender.safetensors`` (the weights and the catalogue's text vectors) and
    ``path/recommender.json`` (``meta`` and the shape), written inside one atomic rename."""
    from safetensors.torch import save_file

    from textcl._io import atomic_dir, atomic_write_json

    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "recommender.safetensors"))
        atomic_write_json(tmp / "recommender.json", {"shape": model.shape.to_dict(), **meta})
    return path


def load(path: str | Path) -> tuple[SequenceRecommender, dict]:
    """The model :func:`save` wrote, in eval mode, and its ``recommender.json``."""
    from safetensors.torch import load_file

    from textcl._io import read_json, recover_dir

    path = recover_dir(path)  # a save killed between its renames leaves the previous folder or the new one
    meta = read_json(path / "recommender.json")
    weights = load_file(str(path / "recommender.safetensors"))
    model = SequenceRecommender(SequenceShape(**meta["shape"]), weights["text"], weights["trained"])
    model.load_state_dict(weights)
    return model.eval(), meta

