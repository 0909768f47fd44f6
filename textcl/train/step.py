"""One optimizer step: for each micro-batch embed, compute the loss and backward (plain, cached or MoCo),
then clip, update and schedule.

The variants share the loss call and the NaN check; each is a small function of ``(run, batch, keys,
backward, pending)`` returning the detached micro-batch loss.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from textcl.errors import TextclError
from textcl.models.chunking import row_lengths
from textcl.models.features import pad_features
from textcl.train.build import Run
from textcl.train.checkpoint import latest_checkpoint


class TrainingDiverged(TextclError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


def embed_views(run: Run, batch) -> list[torch.Tensor]:
    """Embeddings (B, d) of anchors, positives (and negatives): one forward call per encoder.

    The encoder runs the rows of that call as length-homogeneous chunks (``Encoder.forward``), so short
    anchors are never padded to the width of long positives; one call per encoder also keeps DDP's one
    forward per backward."""
    parts = [batch["anchor"], batch["positive"]] + ([batch["negative"]] if batch["negative"] is not None else [])
    pad_id = run.encoder.tokenizer.pad_token_id or 0
    sizes = [p["input_ids"].shape[0] for p in parts]
    if run.config.model.two_tower:
        docs = run.doc_model(pad_features(parts[1:], pad_id))
        return [run.model(parts[0]), *docs.split(sizes[1:])]
    return list(run.model(pad_features(parts, pad_id)).split(sizes))


def contrastive_loss(run: Run, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor | None = None,
                     keys: dict | None = None) -> torch.Tensor:
    """The run's InfoNCE on anchors ``a`` (B, d), positives ``p`` (B, d) and hard negatives ``n`` (B, d)."""
    keys = dict(keys or {})
    if n is None:
        keys.pop("negative_keys", None)
    return run.loss_fn(a, p, n[:, None, :] if n is not None else None, **keys)


def any_rank(flag: bool, run: Run) -> bool:
    """True when ``flag`` is True on any process (an all-reduce of one number when there are several), so that
    every process takes the same branch and none waits alone in a collective."""
    if run.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=run.acc.device)
    return bool(run.acc.reduce(t, reduction="sum").item() > 0)


def checked_backward(run: Run, step: int, scale: float) -> Callable[[torch.Tensor], None]:
    """``backward(loss * scale)``, or :class:`TrainingDiverged` naming step ``step + 1`` and the last good
    checkpoint when the loss is not finite on any process (before any gradient reaches the weights): the
    processes agree first, so all of them stop together."""
    def backward(loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss).all())
        if any_rank(bad, run):
            last = latest_checkpoint(run.out / "checkpoints")
            where = f"the loss is {float(loss.detach()):g}" if bad else "the loss is not finite on another process"
            if run.world > 1:
                where += f" (process {run.acc.process_index} of {run.world})"
            raise TrainingDiverged(
                f"{where} at step {step + 1}; training stopped before the "
                f"optimizer step. The last good checkpoint is {last or 'none (no checkpoint was written yet)'}. "
                "Lower optim.lr, raise loss.temperature, or use train.mixed_precision bf16 instead of fp16.")
        run.acc.backward(loss * scale)
    return backward


def plain_micro_step(run: Run, batch, keys, backward, pending) -> torch.Tensor:
    loss = contrastive_loss(run, *embed_views(run, batch), keys=keys)
    backward(loss)
    return loss.detach()


def cached_micro_step(run: Run, batch, keys, backward, pending) -> torch.Tensor:
    """GradCache: embed each view in mini-batches (``run.mini_batch``: ``loss.mini_batch_size`` resolved) without
    a graph, backward the loss to the embeddings, then replay each mini-batch with its slice of the gradient.
    Each view's rows are sorted longest first, so every mini-batch is length-homogeneous (the encoder trims its
    padding); the loss sees the rows back in batch order."""
    from textcl.losses import cached_backward

    parts = [(run.model, batch["anchor"]), (run.doc_model, batch["positive"])]
    if batch["negative"] is not None:
        parts.append((run.doc_model, batch["negative"]))
    views, inverses = [], []
    for model, feats in parts:
        order = torch.argsort(-row_lengths(feats["attention_mask"]), stable=True)
        views.append((model, {k: v[order] for k, v in feats.items()}))
        inverses.append(torch.argsort(order))
    return cached_backward(views, lambda *e: contrastive_loss(run, *(x[i] for x, i in zip(e, inverses)), keys=keys),
                           run.mini_batch.resolved, backward=backward,
                           no_sync=lambda: run.acc.no_sync(run.model))


def moco_micro_step(run: Run, batch, keys, backward, pending) -> torch.Tensor:
    """MoCo: queries from the encoder, keys from the momentum encoder (no gradient) against the queue; the
    keys are kept in ``pending`` and enqueued after the optimizer step."""
    from textcl.losses import moco_loss

    lc = run.config.loss
    q = run.model(batch["anchor"])
    with torch.no_grad():
        k = run.key_encoder(batch["positive"])
    loss = moco_loss(q, k, run.queue, temperature=lc.temperature, similarity=lc.similarity,
                     positive_keys=keys.get("positive_keys"), anchor_keys=keys.get("anchor_keys"))
    pending.append((k.detach(), keys.get("positive_keys")))
    backward(loss)
    return loss.detach()


def _enqueue(run: Run, pending: list) -> None:
    """Every micro-batch's keys (from all processes) into the MoCo queue."""
    from textcl.losses import all_gather_no_grad

    k = torch.cat([k for k, _ in pending])
    kk = None if pending[0][1] is None else torch.cat([kk for _, kk in pending])
    if run.world > 1:
        k = all_gather_no_grad(k)
        kk = all_gather_no_grad(kk) if kk is not None else None
    run.queue.enqueue(k, kk)


def _update(run: Run) -> None:
    """Clip the gradient norm, take the optimizer and schedule step, clear the gradients."""
    c = run.config
    if c.optim.max_grad_norm is not None:
        run.acc.clip_grad_norm_([p for grp in run.optimizer.param_groups for p in grp["params"]],
                                c.optim.max_grad_norm)
    run.optimizer.step()
    if run.anchor is not None and not run.acc.optimizer_step_was_skipped:
        # optim.l2_start: back towards the starting weights, at this step's rate (not on a step fp16 skipped)
        run.anchor.pull(run.optimizer.param_groups[0]["lr"])
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():  # a learnt temperature is bounded after the step, never inside the graph
        for module in run.acc.unwrap_model(run.loss_fn).modules():
            if hasattr(module, "clamp_parameters_"):
                module.clamp_parameters_()


def train_step(run: Run, micro_batches: Sequence[Callable[[], tuple]], step: int) -> float:
    """One optimizer step over ``micro_batches`` (each a callable giving ``(batch, keys)``, built when the
    step reaches it); gradients are all-reduced on the last micro-batch only. Returns the mean loss."""
    run.model.train()
    if run.doc_model is not run.model:
        run.doc_model.train()
    micro_step = (cached_micro_step if run.config.loss.cached else
                  moco_micro_step if run.queue is not None else plain_micro_step)
    pending: list = []
    if run.queue is not None:  # MoCo: one EMA update per optimizer step, before the keys
        with torch.no_grad():
            run.key_encoder.update(run.encoder)
    g = len(micro_batches)
    backward = checked_backward(run, step, 1.0 / g)
    if run.mix is not None:  # data.mix: its own backward, all-reduced with the last micro-batch's
        with run.acc.no_sync(run.model):
            checked_backward(run, step, 1.0)(run.mix(run, step))
    losses = []
    for i, make in enumerate(micro_batches):
        batch, keys = make()
        with contextlib.nullcontext() if i == g - 1 else run.acc.no_sync(run.model):
            losses.append(micro_step(run, batch, keys, backward, pending))
    _update(run)
    if run.ema is not None and not run.acc.optimizer_step_was_skipped:  # fp16 skips steps that overflowed
        run.ema.update()
    if run.queue is not None:  # enqueue after the step, every micro-batch's keys
        _enqueue(run, pending)
    return float(torch.stack(losses).mean())
