"""The training loop: contrastive steps through Hugging Face Accelerate, with evaluation, checkpoints and logs.

One optimizer step consumes ``grad_accum`` micro-batches of ``batch_size`` examples per process. Gradient
accumulation does not add negatives: each micro-batch only sees its own in-batch negatives. To contrast
against more negatives than fit in memory, use ``loss.cached: true`` (GradCache) or MoCo.
"""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from textcl._io import atomic_write_json
from textcl.config import TrainConfig
from textcl.data.pairs import Example, load_examples
from textcl.errors import TextclError
from textcl.eval.stats import N_BOOTSTRAP
from textcl.eval.sts import as_sts_list, evaluate_sts
from textcl.models import Encoder
from textcl.models.chunking import row_lengths
from textcl.models.features import pad_features
from textcl.models.precision import resolve_precision
from textcl.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from textcl.train.logs import CSVLog, plot_curves
from textcl.train.sampler import epoch_batches
from textcl.versions import environment


class TrainingDiverged(TextclError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path | None
    metrics: dict
    steps: int
    finished: bool


# ---------------------------------------------------------------------------------------------- helpers
def metric_value(m: dict) -> float:
    """The headline number of one evaluation: an STS set's Spearman x100, or an evaluator's score."""
    return m["spearman"] if "spearman" in m else m["score"]


def metric_label(name: str, m: dict) -> str:
    """What :func:`metric_value` of ``m`` measures, for tables and plots."""
    if "spearman" in m:
        return "Spearman x100 (cosine)"
    if name.lower().endswith("ndcg@10"):
        return "nDCG@10 x100"
    return "score"


def retrieval_evaluator(beir_dir: str):
    """An evaluator: nDCG@10 x100 on a BEIR folder's test split, named ``<folder> ndcg@10``."""
    def evaluate(encoder) -> dict[str, float]:
        from textcl.eval.retrieval import evaluate_retrieval

        return {f"{Path(beir_dir).name} ndcg@10": 100.0 * evaluate_retrieval(encoder, beir_dir)["ndcg@10"]}
    return evaluate


def _trackers(report_to) -> list[str]:
    import importlib.util

    if report_to in (None, "none", []):
        return []
    if report_to != "auto":
        return [report_to] if isinstance(report_to, str) else list(report_to)
    found = []
    if importlib.util.find_spec("tensorboard") is not None:
        found.append("tensorboard")
    if importlib.util.find_spec("wandb") is not None and (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")):
        found.append("wandb")
    return found


def _lr_lambda(total: int, warmup: int, kind: str):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def model_card(config: TrainConfig, metrics: dict, citation: str) -> str:
    rows = []
    for name, m in metrics.get("after", {}).items():
        before = metrics.get("before", {}).get(name)
        ci = m.get("ci95")
        ci_text = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        before_text = f"{metric_value(before):.2f}" if before else "–"
        rows.append(f"| {name} | {metric_label(name, m)} | {before_text} | {metric_value(m):.2f}{ci_text} |")
    table = ("\n".join(["| evaluation | metric | before | after (95% CI) |", "|---|---|---|---|", *rows])
             if rows else "(no evaluation)")
    lengths = metrics.get("max_seq_len", {})
    selected_on = ", ".join(metrics.get("selected_on") or []) or "n/a"
    recipe = yaml.safe_dump(config.to_dict(), sort_keys=False)
    return f"""---
library_name: sentence-transformers
base_model: {config.model.name}
tags:
- sentence-transformers
- textcl
- contrastive-learning
---

# {config.name}

A sentence embedding model fine-tuned with textcl from `{config.model.name}` on `{config.data.path}`
({config.data.kind}, {metrics.get('examples', '?')} examples, {metrics.get('steps', '?')} steps).

## Usage

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("path/to/this/folder")
embeddings = model.encode(["A sentence to embed."])
```

Training inputs were truncated to {lengths.get('train', config.model.max_seq_len)} tokens; this model encodes up to
{lengths.get('saved', '?')} tokens (`model.save_max_seq_len: true` saves the training length instead).

## Results

Evaluated in {metrics.get('eval_precision', 'fp32')}, at this model's maximum length.

{table}

Best step on {selected_on}: {metrics.get('best_step')}.

## Recipe

```yaml
{recipe}```

## Citation

```bibtex
{citation.strip()}
```
"""


# ---------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Runs one recipe. Use :func:`textcl.train.train` unless you need the pieces."""

    def __init__(self, config: TrainConfig, output_dir: str | Path | None = None, evaluators=()):
        self.config = config
        self.out = Path(output_dir or config.output_dir)
        self.extra_evaluators = list(evaluators)

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        from textcl.augment import build_augmenter
        from textcl.losses import InfoNCE, MoCoQueue, MomentumEncoder

        c = self.config
        self.trackers = _trackers(c.train.report_to)
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            # Accelerate keeps one global state per process; a second run in the same process (a notebook,
            # a sweep) may ask for another mixed precision, so a single-process run starts afresh.
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)
        # auto: bf16 where the device has it natively (an AVX2-only CPU emulates bf16, 10x+ slower than fp32)
        self.precision = resolve_precision(c.train.mixed_precision, "cuda" if torch.cuda.is_available() else "cpu")
        self.acc = Accelerator(
            mixed_precision=self.precision, cpu=not torch.cuda.is_available(),
            log_with=self.trackers or None, project_dir=str(self.out),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        set_seed(c.train.seed)
        self.examples: list[Example] = load_examples(c.data)
        # length grouping sorts by the whole row's cost: anchor + positive (+ negative), in characters
        self.lengths = np.fromiter((len(e.anchor) + len(e.positive) + len(e.negative or "") for e in self.examples),
                                   dtype=np.int64, count=len(self.examples))
        # model.max_seq_len truncates training inputs only: evaluation and the saved model keep the model's
        # own maximum length, as SimCSE's evaluation does
        encoder = Encoder.load(c.model.name, pooling=c.model.pooling, mlp_head=c.model.mlp_head,
                               device=self.acc.device)
        if c.model.save_max_seq_len:
            encoder.max_seq_length = min(encoder.max_seq_length, c.model.max_seq_len)
        self.max_seq_len = {"train": c.model.max_seq_len, "saved": encoder.max_seq_length}
        self.eval_seconds = 0.0
        self.train_seconds = 0.0
        self.text_aug = build_augmenter(c.data.augment, field="data.augment") if c.data.augment is not None else None
        self.token_aug = None
        if c.data.token_augment is not None:
            self.token_aug = build_augmenter(c.data.token_augment, field="data.token_augment").with_tokenizer(
                encoder.tokenizer)
        dropout = c.model.dropout
        if dropout is None and getattr(self.text_aug, "dropout", None) is not None:
            dropout = self.text_aug.dropout  # Identity(dropout=...) names the rate of the dropout views
        if dropout is not None:
            encoder.set_dropout(dropout)
        doc_encoder = copy.deepcopy(encoder) if c.model.two_tower else None
        lc = c.loss
        loss_fn = InfoNCE(lc.temperature, lc.similarity, symmetric=lc.symmetric, nt_xent=lc.nt_xent,
                          hard_negative_weight=lc.hard_negative_weight, learnable_temperature=lc.learnable_temperature,
                          gather_across_devices=lc.gather_across_devices).to(self.acc.device)

        self.world = self.acc.num_processes
        if c.loss.cached and c.model.two_tower and self.world > 1:
            raise TextclError("loss.cached with model.two_tower on several processes is not supported: the "
                              "replayed query tower would skip its gradient all-reduce; use one of the two")
        global_batches = len(epoch_batches(self.lengths, c.train.batch_size * self.world, seed=c.train.seed,
                                           epoch=0, group_by_length=False))
        self.steps_per_epoch = global_batches // c.train.grad_accum
        if self.steps_per_epoch == 0:
            raise TextclError(f"data: {len(self.examples)} examples make no full optimizer step of batch_size "
                              f"{c.train.batch_size} x grad_accum {c.train.grad_accum} x {self.world} process(es)")
        total = self.steps_per_epoch * c.train.epochs
        self.total_steps = min(total, c.train.max_steps) if c.train.max_steps else total

        decay, no_decay = [], []
        modules = [encoder, loss_fn] + ([doc_encoder] if doc_encoder is not None else [])
        for module in modules:
            for name, p in module.named_parameters():
                if p.requires_grad:
                    (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
        o = c.optim
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=o.lr, betas=tuple(o.betas), eps=o.eps)
        warmup = int(round(o.warmup_ratio * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(self.total_steps, warmup, o.scheduler))
        # the loss is prepared (DDP-wrapped) only when it has parameters (a learnt temperature)
        to_prepare = [encoder] + ([doc_encoder] if doc_encoder is not None else [])
        learnt = any(p.requires_grad for p in loss_fn.parameters())
        prepared = self.acc.prepare(*to_prepare, *([loss_fn] if learnt else []), optimizer)
        self.model = prepared[0]
        self.doc_model = prepared[1] if doc_encoder is not None else self.model
        self.loss_fn = prepared[-2] if learnt else loss_fn
        self.optimizer = prepared[-1]
        self.acc.register_for_checkpointing(self.scheduler)
        self.key_encoder = self.queue = None
        if lc.moco is not None:
            self.key_encoder = MomentumEncoder(self.encoder, lc.moco.momentum).to(self.acc.device)
            self.queue = MoCoQueue(self.encoder.dim, lc.moco.queue_size).to(self.acc.device)
            self.acc.register_for_checkpointing(self.key_encoder)
            self.acc.register_for_checkpointing(self.queue)
        self.eval_sets = as_sts_list(c.eval.data) if c.eval.data else []
        self.evaluators = list(self.extra_evaluators) + [retrieval_evaluator(d) for d in c.eval.retrieval]
        self.test_sets = as_sts_list(c.eval.test) if c.eval.test else []

    @property
    def encoder(self) -> Encoder:
        return self.acc.unwrap_model(self.model)

    @property
    def doc_encoder(self) -> Encoder:
        return self.acc.unwrap_model(self.doc_model)

    # ------------------------------------------------------------------ one step
    def _features(self, texts: list[str], encoder: Encoder, seeds: list[int] | None) -> dict[str, torch.Tensor]:
        feats = encoder.tokenize(texts, max_length=self.config.model.max_seq_len)
        if self.token_aug is not None and seeds is not None:
            feats["input_ids"], feats["attention_mask"] = self.token_aug(feats["input_ids"], feats["attention_mask"],
                                                                         seeds)
        return {k: v.to(self.acc.device) for k, v in feats.items()}

    def _batch(self, idx: np.ndarray, epoch: int):
        from textcl.augment import view_seed
        from textcl.losses import text_keys

        seed = self.config.train.seed
        exs = [self.examples[i] for i in idx]
        same_texts = self.config.data.kind == "unlabeled"  # both views come from the one text
        anchors = [e.anchor for e in exs]
        positives = anchors if same_texts else [e.positive for e in exs]
        s0 = [view_seed(seed, epoch, int(i), 0) for i in idx]
        s1 = [view_seed(seed, epoch, int(i), 1) for i in idx]
        a_views = self.text_aug(anchors, s0) if self.text_aug is not None else anchors
        p_views = self.text_aug(positives, s1) if self.text_aug is not None else positives
        anchor_feats = self._features(a_views, self.encoder, s0)
        if p_views is a_views and self.token_aug is None and self.doc_model is self.model:
            positive_feats = anchor_feats  # plain dropout views: the same tokens, encoded twice
        else:
            positive_feats = self._features(p_views, self.doc_encoder, s1)
        batch = {"anchor": anchor_feats, "positive": positive_feats, "negative": None}
        keys = {}
        if self.config.loss.mask_false_negatives:
            anchor_keys = text_keys(anchors).to(self.acc.device)
            keys = {"anchor_keys": anchor_keys,
                    "positive_keys": anchor_keys if same_texts else text_keys(positives).to(self.acc.device)}
        if self.config.data.group_field is not None:  # same group: not each other's negatives
            groups = text_keys([e.group or "" for e in exs])
            groups[torch.tensor([e.group is None for e in exs])] = -1  # -1: in no group
            keys["group_ids"] = groups.to(self.acc.device)
        if exs[0].negative is not None:
            negatives = [e.negative for e in exs]
            batch["negative"] = self._features(negatives, self.doc_encoder, None)
            if keys:
                keys["negative_keys"] = text_keys(negatives).to(self.acc.device)[:, None]
        return batch, keys

    def _embed_pair(self, batch) -> list[torch.Tensor]:
        """Embeddings of anchors, positives (and negatives): one forward call per encoder.

        The encoder runs the rows of that call as length-homogeneous chunks (``Encoder.forward``), so short
        anchors are never padded to the width of long positives; one call per encoder also keeps DDP's one
        forward per backward."""
        parts = [batch["anchor"], batch["positive"]] + ([batch["negative"]] if batch["negative"] is not None else [])
        pad_id = self.encoder.tokenizer.pad_token_id or 0
        sizes = [p["input_ids"].shape[0] for p in parts]
        if self.config.model.two_tower:
            docs = self.doc_model(pad_features(parts[1:], pad_id))
            return [self.model(parts[0]), *docs.split(sizes[1:])]
        return list(self.model(pad_features(parts, pad_id)).split(sizes))

    def _loss(self, a, p, n=None, keys=None) -> torch.Tensor:
        keys = dict(keys or {})
        if n is None:
            keys.pop("negative_keys", None)
        return self.loss_fn(a, p, n[:, None, :] if n is not None else None, **keys)

    def _micro_step(self, batch, keys, scale: float) -> torch.Tensor:
        """Forward and backward for one micro-batch; returns the detached loss."""
        from textcl.losses import cached_backward, moco_loss

        lc = self.config.loss
        backward = lambda loss: self.acc.backward(loss * scale)  # noqa: E731
        if lc.cached:
            parts = [(self.model, batch["anchor"]), (self.doc_model, batch["positive"])]
            if batch["negative"] is not None:
                parts.append((self.doc_model, batch["negative"]))
            # each view's rows sorted longest first, so every mini-batch is length-homogeneous (the encoder
            # trims its padding); the loss sees the rows back in batch order
            views, inverses = [], []
            for model, feats in parts:
                order = torch.argsort(-row_lengths(feats["attention_mask"]), stable=True)
                views.append((model, {k: v[order] for k, v in feats.items()}))
                inverses.append(torch.argsort(order))
            return cached_backward(views, lambda *e: self._loss(*(x[i] for x, i in zip(e, inverses)), keys=keys),
                                   lc.mini_batch_size, backward=self._checked(backward),
                                   no_sync=lambda: self.acc.no_sync(self.model))
        if self.queue is not None:
            q = self.model(batch["anchor"])
            with torch.no_grad():
                k = self.key_encoder(batch["positive"])
            loss = moco_loss(q, k, self.queue, temperature=lc.temperature, similarity=lc.similarity,
                             positive_keys=keys.get("positive_keys"), anchor_keys=keys.get("anchor_keys"))
            self._pending_keys.append((k.detach(), keys.get("positive_keys")))
            self._checked(backward)(loss)
            return loss.detach()
        loss = self._loss(*self._embed_pair(batch), keys=keys)
        self._checked(backward)(loss)
        return loss.detach()

    def _checked(self, backward):
        def run(loss: torch.Tensor) -> None:
            if not torch.isfinite(loss).all():
                last = latest_checkpoint(self.out / "checkpoints")
                raise TrainingDiverged(
                    f"the loss is {float(loss.detach()):g} at step {self.step + 1}; training stopped before the "
                    f"optimizer step. The last good checkpoint is {last or 'none (no checkpoint was written yet)'}. "
                    "Lower optim.lr, raise loss.temperature, or use train.mixed_precision bf16 instead of fp16.")
            backward(loss)
        return run

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, encoder: Encoder, sets, *, evaluators=(), n_bootstrap: int = 0, with_all: bool = False) -> dict:
        """name -> metrics: each STS set's ``{spearman, pearson, n, ci95}`` (plus SentEval's ``all`` over several
        sets when ``with_all``), and each evaluator's values as ``{score}``."""
        out: dict = {}
        t0 = time.perf_counter()
        # evaluation encodes in the run's precision (bf16 evaluates about twice as fast where it is native)
        encoder.encode_bf16 = self.precision == "bf16"
        if sets:
            report = evaluate_sts(encoder, sets, n_bootstrap=n_bootstrap, batch_size=self.config.eval.batch_size)
            out.update(report["sets"])
            if with_all and "all" in report:
                out["all"] = report["all"]
        for evaluator in evaluators:
            for name, value in evaluator(encoder).items():
                out[name] = {"score": float(value)}
        self.eval_seconds += time.perf_counter() - t0
        return out

    def _time_report(self) -> dict:
        total = self.train_seconds + self.eval_seconds
        return {"train_s": round(self.train_seconds, 2), "eval_s": round(self.eval_seconds, 2),
                "eval_share": round(self.eval_seconds / total, 4) if total else 0.0}

    @staticmethod
    def _score(metrics: dict) -> float:
        """The selection score: the mean over the evaluated sets and evaluator values (``all`` excluded)."""
        return float(np.mean([metric_value(m) for k, m in metrics.items() if k != "all"]))

    # ------------------------------------------------------------------ the loop
    def run(self, *, resume: bool = False, stop_after_step: int | None = None) -> TrainResult:
        self._setup()
        c, acc = self.config, self.acc
        ckpt_root = self.out / "checkpoints"
        state = {"step": 0, "epoch": 0, "pos": 0, "best": None, "best_step": None, "before": {}}
        resumed_from = latest_checkpoint(ckpt_root) if resume else None
        if resume and resumed_from is None:
            acc.print(f"textcl: no checkpoint under {ckpt_root}; starting from scratch")
        if resumed_from is not None:
            state = load_checkpoint(acc, resumed_from)
            acc.print(f"textcl: resumed from {resumed_from} (step {state['step']})")
        elif acc.is_main_process:
            # a fresh run in a used folder: stale checkpoints and best model would mix with this run's
            for stale in (ckpt_root, self.out / "best-model", self.out / "best-model-document"):
                if stale.exists():
                    shutil.rmtree(stale)
        acc.wait_for_everyone()
        self.step = state["step"]
        log = CSVLog(self.out / "log.csv", resume_from_step=self.step if resumed_from else None) \
            if acc.is_main_process else None
        if self.trackers:
            acc.init_trackers(c.name, config=_flatten(c.to_dict()))
        if acc.is_main_process:
            (self.out).mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / "config.json", c.to_dict())
            if not resumed_from and c.eval.before:
                state["before"] = {**self._evaluate(self.encoder, self.eval_sets, evaluators=self.evaluators),
                                   **self._evaluate(self.encoder, self.test_sets, with_all=True)}
                for name, m in state["before"].items():
                    log.write(step=0, eval_name=name, eval_score=f"{metric_value(m):.4f}")
                    acc.print(f"before training: {name} {metric_value(m):.2f}")

        g = c.train.grad_accum
        batch_size = c.train.batch_size
        pbar = None
        if acc.is_main_process:
            from tqdm.auto import tqdm

            pbar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        epoch, pos = state["epoch"], state["pos"]
        finished = True
        rate = None
        while self.step < self.total_steps:
            # global batches of batch_size x processes; each process takes its slice, so N processes see the
            # same global batches as one process with an N times larger batch
            r = acc.process_index
            mine = [b[r * batch_size:(r + 1) * batch_size]
                    for b in epoch_batches(self.lengths, batch_size * self.world, seed=c.train.seed, epoch=epoch,
                                           group_by_length=c.data.group_by_length)]
            usable = (len(mine) // g) * g
            while pos + g <= usable and self.step < self.total_steps:
                t0 = time.perf_counter()
                self.model.train()
                if self.doc_model is not self.model:
                    self.doc_model.train()
                losses = []
                if self.queue is not None:  # MoCo: one EMA update per optimizer step, before the keys
                    with torch.no_grad():
                        self.key_encoder.update(self.encoder)
                    self._pending_keys = []
                for micro in range(g):
                    batch, keys = self._batch(mine[pos + micro], epoch)
                    sync = contextlib.nullcontext() if micro == g - 1 else acc.no_sync(self.model)
                    with sync:
                        losses.append(self._micro_step(batch, keys, 1.0 / g))
                if c.optim.max_grad_norm is not None:
                    acc.clip_grad_norm_([p for grp in self.optimizer.param_groups for p in grp["params"]],
                                        c.optim.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.queue is not None:  # enqueue after the step, every micro-batch's keys
                    from textcl.losses import all_gather_no_grad

                    k = torch.cat([k for k, _ in self._pending_keys])
                    kk = None if self._pending_keys[0][1] is None else torch.cat([kk for _, kk in self._pending_keys])
                    if self.world > 1:
                        k = all_gather_no_grad(k)
                        kk = all_gather_no_grad(kk) if kk is not None else None
                    self.queue.enqueue(k, kk)
                pos += g
                self.step += 1
                loss = float(torch.stack(losses).mean())
                dt = time.perf_counter() - t0
                self.train_seconds += dt
                pairs = batch_size * g * self.world / dt
                rate = pairs if rate is None else 0.9 * rate + 0.1 * pairs
                lr = self.scheduler.get_last_lr()[0]
                temp = self.acc.unwrap_model(self.loss_fn).temperature
                temp = float(temp) if not isinstance(temp, float) else temp
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", pairs_s=f"{rate:.0f}")
                if acc.is_main_process and (self.step % c.train.log_every == 0 or self.step == 1):
                    log.write(step=self.step, epoch=epoch, loss=f"{loss:.6f}", lr=f"{lr:.6g}",
                              temperature=f"{temp:.5f}", pairs_per_s=f"{pairs:.1f}")
                if self.trackers:
                    acc.log({"train/loss": loss, "train/lr": lr, "train/pairs_per_s": pairs}, step=self.step)
                last = self.step == self.total_steps
                if (self.eval_sets or self.evaluators) and c.eval.every and (self.step % c.eval.every == 0 or last):
                    self._eval_and_select(state, log)
                if c.train.checkpoint_every and (self.step % c.train.checkpoint_every == 0 or last):
                    state.update(step=self.step, epoch=epoch, pos=pos)
                    save_checkpoint(acc, ckpt_root, self.step, state, c.train.keep_checkpoints)
                if stop_after_step is not None and self.step >= stop_after_step and not last:
                    finished = False
                    break
            if not finished:
                break
            epoch, pos = epoch + 1, 0
        if pbar is not None:
            pbar.close()
        if not finished:
            acc.end_training()
            return TrainResult(self.out, None, {}, self.step, False)
        return self._finish(state)

    def _eval_and_select(self, state: dict, log) -> None:
        acc = self.acc
        if acc.is_main_process:
            before = self.eval_seconds
            metrics = self._evaluate(self.encoder, self.eval_sets, evaluators=self.evaluators)
            took = self.eval_seconds - before
            score = self._score(metrics)
            for name, m in metrics.items():
                log.write(step=self.step, eval_name=name, eval_score=f"{metric_value(m):.4f}",
                          eval_seconds=f"{took:.2f}")
            if self.trackers:
                acc.log({f"eval/{k}": metric_value(m) for k, m in metrics.items()}, step=self.step)
            improved = state["best"] is None or score > state["best"]
            state["selected_on"] = [k for k in metrics if k != "all"]
            share = self._time_report()["eval_share"]
            acc.print(f"step {self.step}: " + ", ".join(f"{k} {metric_value(m):.2f}" for k, m in metrics.items())
                      + (" (best so far)" if improved else "")
                      + f" [evaluation {took:.1f} s; {100 * share:.0f}% of this run's time so far"
                      + ("; raise eval.every to train more between evaluations]" if share > 0.3 else "]"))
            if improved:
                state["best"], state["best_step"] = score, self.step
                if self.config.eval.select_best:
                    self.encoder.save(self.out / "best-model")
                    if self.config.model.two_tower:
                        self.doc_encoder.save(self.out / "best-model-document")
        acc.wait_for_everyone()

    def _finish(self, state: dict) -> TrainResult:
        c, acc = self.config, self.acc
        model_dir = self.out / "model"
        metrics: dict = {}
        if acc.is_main_process:
            final, final_doc = self.encoder, (self.doc_encoder if c.model.two_tower else None)
            if c.eval.select_best and (self.out / "best-model").exists():
                final = Encoder.load(self.out / "best-model", device=acc.device)
                if c.model.two_tower:
                    final_doc = Encoder.load(self.out / "best-model-document", device=acc.device)
            after = {**self._evaluate(final, self.eval_sets, evaluators=self.evaluators, n_bootstrap=N_BOOTSTRAP),
                     **self._evaluate(final, self.test_sets, n_bootstrap=N_BOOTSTRAP, with_all=True)}
            metrics = {"before": state.get("before", {}), "after": after, "best_step": state.get("best_step"),
                       "best_score": state.get("best"), "selected_on": state.get("selected_on"),
                       "steps": self.step, "examples": len(self.examples), "model": c.model.name,
                       "max_seq_len": self.max_seq_len, "precision": self.precision,
                       "eval_precision": "bf16" if self.precision == "bf16" else "fp32",
                       "time": self._time_report(), "versions": environment(), "config": c.to_dict()}
            acc.print(f"time: training {metrics['time']['train_s']:.1f} s, evaluation {metrics['time']['eval_s']:.1f} s "
                      f"({100 * metrics['time']['eval_share']:.0f}% of the total)")
            citation = self.acc.unwrap_model(self.loss_fn).citation
            final.name = c.name
            final.save(model_dir, model_card=model_card(c, metrics, citation))
            if final_doc is not None:
                final_doc.save(self.out / "model-document")
            atomic_write_json(self.out / "metrics.json", metrics)
            if c.train.plot:
                labels = {name: metric_label(name, m) for name, m in after.items()}
                plot_curves(self.out / "log.csv", self.out / "training.png", title=c.name, labels=labels)
        acc.wait_for_everyone()
        acc.end_training()
        return TrainResult(self.out, model_dir, metrics, self.step, True)


def train(config: TrainConfig, *, output_dir: str | Path | None = None, resume: bool = False,
          stop_after_step: int | None = None, evaluators=()) -> TrainResult:
    """Train an encoder with a recipe.

    Writes ``OUT/model/`` (sentence-transformers format, with a model card), ``OUT/metrics.json``
    (STS before and after), ``OUT/log.csv``, ``OUT/training.png`` and ``OUT/checkpoints/``.

    Args:
        config: a validated :class:`~textcl.config.TrainConfig` (see :func:`textcl.config.load_config`).
        output_dir: overrides ``config.output_dir``.
        resume: continue from the newest complete checkpoint under ``OUT/checkpoints``.
        stop_after_step: stop (as if interrupted) after this step and its checkpoint, if any.
        evaluators: extra evaluators, each ``fn(encoder) -> {name: score}`` (higher is better), run with the
            STS sets of ``eval.data``; the best step maximises the mean of all of them.
    """
    return Trainer(config, output_dir, evaluators).run(resume=resume, stop_after_step=stop_after_step)
