"""Training the sequence user tower (``data.interactions.user_tower: sequence``, :mod:`textcl.recommend.sequence`);
:func:`textcl.train.train` hands such a recipe here.

The text encoder is frozen: the catalogue is embedded once, and only the projection, the id embeddings and
the GRU train, for ``train.epochs`` epochs of ``train.batch_size`` windows (AdamW at ``optim.lr``, gradients
clipped to ``optim.max_grad_norm``). After each epoch NAME-valid is scored; the best epoch's weights are the
model. Each epoch ends with a checkpoint (``OUT/checkpoints/epoch-N.pt``, written atomically, the last
``train.keep_checkpoints`` kept) holding the weights, the optimizer, the random states and the best so far, so
``resume`` continues an interrupted run as if it had not stopped. A loss that is not finite stops the run,
naming the epoch and the last good checkpoint.

Writes ``OUT/model/`` (``recommender.safetensors``: the weights and the catalogue's text vectors;
``recommender.json``: the shape, the text encoder, the item ids and texts, the temperature),
``OUT/items.jsonl`` (the catalogue as documents), ``OUT/metrics.json`` (``before``: the untrained tower;
``after``: the best epoch's NAME-valid, NAME-test and NAME-cold with 95% bootstrap CIs; ``selected_on``) and
``OUT/config.json``. A fresh run first removes what an earlier run left in the folder (checkpoints, best-model,
metrics.json, items.jsonl, logs). Serving: ``textcl index build --input OUT/items.jsonl --model OUT/model --out
INDEX`` then ``textcl serve INDEX`` (:mod:`textcl.recommend.tower`).
"""
from __future__ import annotations

import dataclasses
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from textcl._io import atomic_path, atomic_write_json
from textcl.errors import TextclError
from textcl.recommend.sequence import SequenceRecommender, SequenceShape, evaluate, save, training_windows

CHECKPOINT = re.compile(r"^epoch-(\d+)\.pt$")
#: what an earlier run in the output folder may have left that would describe another run than this one
STALE = ("best-model", "best-model-document", "model-document", "items.jsonl", "log.csv", "training.png",
         "metrics.json")


def item_text_vectors(config, task) -> torch.Tensor:
    """(n, D) the frozen text encoder's normalised vectors of the catalogue's texts, cut at
    ``model.max_seq_len`` tokens."""
    from textcl.models import Encoder

    encoder = Encoder.load(config.model.name, pooling=config.model.pooling)
    encoder.max_seq_length = min(encoder.max_seq_length, int(config.model.max_seq_len))
    vectors = encoder.encode(task.item_texts, batch_size=config.eval.batch_size, normalize=True)
    return torch.from_numpy(np.asarray(vectors, dtype=np.float32))


def _local(name: str) -> str:
    """``name`` as an absolute path when it is a local folder (the server may start elsewhere), else as given."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def build_model(config, task, text: torch.Tensor) -> SequenceRecommender:
    s = config.data.interactions.sequence
    trained = torch.tensor([i not in task.cold_items and i in task.counts for i in task.item_ids], dtype=torch.bool)
    shape = SequenceShape(text_dim=text.shape[1], dim=s.dim, hidden=s.hidden,
                          history=config.data.interactions.history, dropout=s.dropout, id_embeddings=s.id_embeddings)
    torch.manual_seed(config.train.seed)
    return SequenceRecommender(shape, text, trained)


def _all_stages(model, task, n_bootstrap: int) -> dict:
    return {f"{task.name}-{stage}": evaluate(model, task, stage, n_bootstrap) for stage in task.sets}


def _checkpoints(root: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in root.glob("epoch-*.pt") if (m := CHECKPOINT.match(p.name))]
    return sorted(found)


def _save_checkpoint(root: Path, epoch: int, state: dict, keep: int) -> Path:
    path = root / f"epoch-{epoch}.pt"
    with atomic_path(path) as tmp:  # written beside it, then renamed: a kill leaves the previous checkpoints
        torch.save(state, tmp)
    for _, old in _checkpoints(root)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def _layout(config, task, model) -> dict:
    """What a checkpoint must agree on to be resumed: the shape, the catalogue and what training reads."""
    c = config
    return {"shape": model.shape.to_dict(), "items": len(task.item_ids), "seed": c.train.seed,
            "batch_size": c.train.batch_size, "lr": c.optim.lr, "pooling": c.model.pooling,
            "weight_decay": c.optim.weight_decay,
            "max_grad_norm": c.optim.max_grad_norm, "temperature": c.loss.temperature,
            "model": str(c.model.name), "max_seq_len": c.model.max_seq_len, "data.path": str(c.data.path),
            "data.interactions": dataclasses.asdict(c.data.interactions)}


def train_sequence(config, output_dir=None, *, resume: bool = False, stop_after_epoch: int | None = None):
    """Train the sequence user tower of ``config`` (validated, ``data.interactions.user_tower: sequence``); see
    the module docstring. Returns a :class:`~textcl.train.TrainResult` (``steps`` counts epochs)."""

    threads = torch.get_num_threads()
    if config.train.threads:
        torch.set_num_threads(int(config.train.threads))
    try:
        return _train(config, output_dir, resume, stop_after_epoch)
    finally:
        torch.set_num_threads(threads)


def _train(c, output_dir, resume: bool, stop_after_epoch: int | None):
    from textcl.losses.next_item import sequence_softmax
    from textcl.recommend.task import load_task
    from textcl.train.checkpoint import ResumeMismatch
    from textcl.train.step import TrainingDiverged
    from textcl.train.result import TrainResult

    out = Path(output_dir or c.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_root = out / "checkpoints"
    task = load_task(c.data)
    t0 = time.perf_counter()
    text = item_text_vectors(c, task)
    embed_s = time.perf_counter() - t0
    model = build_model(c, task, text)
    layout = _layout(c, task, model)
    inputs, targets = training_windows([[task.index[i] for i in task.train[u]] for u in sorted(task.train)],
                                       model.shape.history)
    if len(inputs) == 0:
        raise TextclError(f"{task.name}: no training windows (every training sequence has one item)")
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.optim.lr, weight_decay=c.optim.weight_decay)
    state = {"epoch": 0, "best": None, "best_epoch": 0, "best_weights": None, "history": [],
             "before": None, "train_s": 0.0, "eval_s": 0.0, "embed_s": embed_s, "total_s": 0.0}
    found = _checkpoints(ckpt_root)
    if resume and found:
        saved = torch.load(found[-1][1], weights_only=True)  # tensors and plain containers only: no pickled code
        if saved["layout"] != layout:
            diff = sorted(k for k in layout if saved["layout"].get(k) != layout[k])
            raise ResumeMismatch(f"{found[-1][1]}: the checkpoint was written with other settings "
                                 f"({', '.join(diff)}); resume with the recipe that wrote it, or start a new output "
                                 "folder")
        if saved["state"]["epoch"] > c.train.epochs:
            raise ResumeMismatch(f"{found[-1][1]}: the run already trained {saved['state']['epoch']} epochs, more "
                                 f"than train.epochs ({c.train.epochs}); resume with train.epochs >= "
                                 f"{saved['state']['epoch']}, or start a new output folder")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]
        state["embed_s"] += embed_s
    else:  # a fresh start (no checkpoint to resume): an earlier run's checkpoints and outputs must not mix in
        for old in (ckpt_root, *(out / name for name in STALE)):
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        found = []
    if resume and not found:
        print(f"textcl: no checkpoint under {ckpt_root}; starting from scratch", flush=True)
    if state["before"] is None:
        t_eval = time.perf_counter()
        state["before"] = _all_stages(model, task, 0) if c.eval.before else {}
        state["eval_s"] += time.perf_counter() - t_eval
    atomic_write_json(out / "config.json", c.to_dict())
    candidates = model.trained
    last_good = found[-1][1] if resume and found else None
    while state["epoch"] < c.train.epochs:
        epoch = state["epoch"] + 1
        t_epoch = time.perf_counter()
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(c.train.seed * 100_003 + epoch))
        total, batches = 0.0, 0
        for a in range(0, len(order), c.train.batch_size):
            rows = order[a:a + c.train.batch_size]
            items = model.item_vectors()
            loss = sequence_softmax(model.user_vectors(inputs[rows], items), items, targets[rows], candidates,
                                    temperature=c.loss.temperature)
            if not math.isfinite(float(loss.detach())):
                where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
                raise TrainingDiverged(f"the loss became {float(loss)} in epoch {epoch}, batch {batches + 1}; "
                                       f"{where} (a resume replays the same batches: start afresh with a lower "
                                       "optim.lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.optim.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), c.optim.max_grad_norm)
            optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
        state["train_s"] += time.perf_counter() - t_epoch
        t_eval = time.perf_counter()
        valid = evaluate(model, task, "valid")
        state["eval_s"] += time.perf_counter() - t_eval
        state["history"].append({"epoch": epoch, "loss": total / batches, "valid_ndcg@10": valid["ndcg@10"]})
        if state["best"] is None or valid["score"] > state["best"]:
            state["best"], state["best_epoch"] = valid["score"], epoch
            state["best_weights"] = {k: v.clone() for k, v in model.state_dict().items()}
        state["epoch"] = epoch
        state["total_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        last_good = _save_checkpoint(ckpt_root, epoch, {"layout": layout, "model": model.state_dict(),
                                                        "optimizer": optimizer.state_dict(),
                                                        "rng": torch.get_rng_state(), "state": state},
                                     c.train.keep_checkpoints)
        print(f"textcl: epoch {epoch}/{c.train.epochs} loss {total / batches:.4f} "
              f"{task.name}-valid NDCG@10 {valid['ndcg@10']:.4f}", flush=True)
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < c.train.epochs:
            return TrainResult(out, None, {}, epoch, False)
    model.load_state_dict(state["best_weights"])
    t_eval = time.perf_counter()
    after = _all_stages(model, task, 1000)
    state["eval_s"] += time.perf_counter() - t_eval
    model_dir = save(model, out / "model", {
        "text_encoder": _local(str(c.model.name)), "pooling": c.model.pooling, "max_seq_len": int(c.model.max_seq_len),
        "temperature": float(c.loss.temperature), "item_ids": list(task.item_ids),
        "item_texts": list(task.item_texts)})
    task.write_items(out)  # the catalogue to index: textcl index build --input OUT/items.jsonl --model OUT/model
    state["total_s"] += time.perf_counter() - t0
    metrics = {"name": c.name, "user_tower": "sequence", "before": state["before"], "after": after,
               "selected_on": [f"{task.name}-valid"], "best_step": state["best_epoch"], "steps": state["epoch"],
               "epochs": state["history"],
               # seconds over the whole run, resumes included: training epochs, the catalogue's embedding (once
               # a process), the evaluations, and all of it with loading and saving
               "time": {k: round(state[k], 2) for k in ("train_s", "embed_s", "eval_s", "total_s")},
               "ranking": "every item ranked; each user's earlier items left out (the target never)"}
    atomic_write_json(out / "metrics.json", metrics)
    return TrainResult(out, model_dir, metrics, state["epoch"], True)
