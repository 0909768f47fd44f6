"""The training loop: contrastive steps through Hugging Face Accelerate, with evaluation, checkpoints and logs.

One optimizer step consumes ``grad_accum`` micro-batches of ``batch_size`` examples per process. Gradient
accumulation does not add negatives: each micro-batch only sees its own in-batch negatives. To contrast
against more negatives than fit in memory, use ``loss.cached: true`` (GradCache) or MoCo.

The parts, each in its own module: :func:`~textcl.train.build.build` (accelerator, data, encoders, loss,
optimizer, schedule), :class:`~textcl.train.batcher.Batcher` (views, tokens, keys),
:func:`~textcl.train.step.train_step` (embed, loss, backward: plain, cached or MoCo),
:class:`~textcl.train.evaluator.Evaluator` (evaluate, select the best, save it),
:class:`~textcl.train.checkpoint.Checkpointer` and :class:`~textcl.train.logs.Reporter`.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from textcl._io import atomic_write_json
from textcl.config import TrainConfig
from textcl.errors import ConfigError
from textcl.train.batcher import Batcher
from textcl.train.build import Run, build
from textcl.train.checkpoint import Checkpointer
from textcl.train.evaluator import Clock, Evaluator
from textcl.train.logs import CSVLog, Reporter
from textcl.thread_governor import install
from textcl.train.result import TrainResult
from textcl.train.step import TrainingDiverged, train_step

__all__ = ["STOP", "TrainResult", "Trainer", "TrainingDiverged", "train"]

#: what an ``on_eval`` callback returns to end the run after the current step (as if interrupted)
STOP = "stop"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


class Trainer:
    """Runs one recipe. Use :func:`textcl.train.train` unless you need the pieces (``self.run_state``, the
    :class:`~textcl.train.build.Run`, exists once :meth:`run` or :meth:`setup` has built it)."""

    def __init__(self, config: TrainConfig, output_dir: str | Path | None = None, evaluators=(), on_eval=None):
        self.config = config
        self.out = Path(output_dir or config.output_dir)
        self.extra_evaluators = list(evaluators)
        self.on_eval = on_eval
        self.run_state: Run | None = None

    def setup(self, resume: bool = False) -> Run:
        self.run_state = build(self.config, self.out, resume=resume)
        return self.run_state

    def _start(self, run: Run, resume: bool):
        """Resume or start afresh; open the log, the trackers and ``config.json``; score the starting model."""
        c, acc, out = run.config, run.acc, self.out
        best = (out / "best-model", out / "best-model-document")
        layout = {"processes": run.world, "train.batch_size": c.train.batch_size,
                  "train.grad_accum": c.train.grad_accum, "train.seed": c.train.seed,
                  "data.group_by_length": c.data.group_by_length, "examples": len(run.examples),
                  "precision": run.precision, "chunk_overhead": run.encoder.chunk_overhead,
                  "model.fast_dropout": c.model.fast_dropout,
                  # what the selection score averages: the best score so far is only comparable on the same sets
                  "selection": [*map(str, c.eval.data), *map(str, c.eval.retrieval),
                                *([f"guard:{g}" for g in c.eval.guard] if c.eval.guard_select else [])],
                  # auto's measured mini-batch, kept by a resumed run (an explicit one may change on resume)
                  **({"loss.mini_batch_size": run.mini_batch.resolved} if run.mini_batch is not None
                     and run.mini_batch.requested == "auto" else {}),
                  # a log's rows and ranking sets: the texts (template, history, separator) and split change
                  # without changing the number of examples
                  **({"data.path": str(c.data.path), "data.interactions": _interactions_layout(c)}
                     if c.data.kind == "interactions" else {})}
        self.checkpoints = Checkpointer(acc, out / "checkpoints", c.train.checkpoint_every, c.train.keep_checkpoints,
                                        outputs=best, layout=layout)
        fresh = {"step": 0, "epoch": 0, "pos": 0, "best": None, "best_step": None, "before": {}}
        state = self.checkpoints.start(resume, fresh, stale=best)
        resumed = self.checkpoints.resumed_from is not None
        if not resumed and acc.is_main_process:  # an earlier run's catalogue must not sit beside this run's model
            (out / "items.jsonl").unlink(missing_ok=True)
        log = CSVLog(out / "log.csv", resume_from_step=state["step"] if resumed else None) if acc.is_main_process else None
        if run.trackers:
            acc.init_trackers(c.name, config=_flatten(c.to_dict()))
        if acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "config.json", c.to_dict())
            if not resumed and c.eval.before:
                self.evaluator.before(state, log)
            elif not resumed and self.evaluator.guards:  # a guard's change needs its starting score
                self.evaluator.before(state, log, guards_only=True)
        return state, log

    def run(self, *, resume: bool = False, stop_after_step: int | None = None) -> TrainResult:
        run = self.setup(resume)
        previous = install(run.threads)  # the evaluator's encodes follow the run's ThreadGovernor too
        threads_before = torch.get_num_threads()
        try:
            return self._loop(run, resume, stop_after_step)
        finally:
            install(previous)
            if run.threads is not None:  # what the run's last reading chose does not outlive it
                torch.set_num_threads(threads_before)

    def _loop(self, run: Run, resume: bool, stop_after_step: int | None) -> TrainResult:
        if self.on_eval is not None and run.world > 1:
            raise ValueError("on_eval needs a single process: the selection score exists on the main process only")
        clock = Clock()
        self.evaluator = evaluator = Evaluator(run, self.extra_evaluators, clock)
        state, log = self._start(run, resume)
        batcher, g = Batcher(run), run.config.train.grad_accum
        step, epoch, pos = state["step"], state["epoch"], state["pos"]
        report = Reporter(run, log, step, clock)
        while step < run.total_steps:
            mine = run.process_batches(epoch)
            usable = (len(mine) // g) * g
            while pos + g <= usable and step < run.total_steps:
                t0 = time.perf_counter()
                if run.threads is not None:
                    run.threads.tune()
                if run.catalogue is not None and run.catalogue.due(step):  # negatives catalogue: re-embed the items
                    run.catalogue.refresh(run.doc_encoder, step, max_length=run.config.model.max_seq_len,
                                          batch_size=run.config.eval.batch_size, autocast=run.acc.autocast)
                loss = train_step(run, [lambda b=b: batcher(b, epoch) for b in mine[pos:pos + g]], step)
                pos, step = pos + g, step + 1
                report.step(step, epoch, loss, time.perf_counter() - t0)
                last = step == run.total_steps
                stop = stop_after_step is not None and step >= stop_after_step and not last
                if evaluator.due(step, last):
                    score = evaluator.select(step, state, log)
                    # after the last step too: a run stopped there skips the final evaluation and model
                    stop = (self.on_eval is not None and self.on_eval(step, score) == STOP) or stop
                if self.checkpoints.due(step, last):
                    state.update(step=step, epoch=epoch, pos=pos)
                    self.checkpoints.save(step, state)
                if stop:  # as if interrupted
                    report.close()
                    run.acc.end_training()
                    return TrainResult(self.out, None, {}, step, False)
            epoch, pos = epoch + 1, 0
        report.close()
        model_dir, metrics = evaluator.finish(state, step)
        return TrainResult(self.out, model_dir, metrics, step, True)


def _interactions_layout(c: TrainConfig) -> dict:
    """``data.interactions`` as a checkpoint's layout records it: the catalogue softmax's fields only when it is
    on (a checkpoint written before they existed has in-batch negatives and resumes); never ``user_tower`` and
    ``sequence``, which came later still (this trainer runs the text tower only)."""
    d = asdict(c.data.interactions)
    d.pop("user_tower")
    d.pop("sequence")
    if d["negatives"] == "batch":
        d.pop("negatives")
        d.pop("catalogue_refresh")
    return d


def train(config: TrainConfig, *, output_dir: str | Path | None = None, resume: bool = False,
          stop_after_step: int | None = None, evaluators=(), on_eval=None) -> TrainResult:
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
        on_eval: called after each evaluation during training as ``on_eval(step, score)`` with the step's
            selection score (the mean that chooses the best step); returning :data:`STOP` ends the run after
            that step as if interrupted (``finished`` False, no ``model/``), after the last step too (the final
            evaluation is skipped). Single-process runs only.
            :mod:`textcl.tune` prunes trials with it.
    """
    it = config.data.interactions if config.data.kind == "interactions" else None
    if it is not None and it.user_tower == "sequence":
        from textcl.train.sequence import train_sequence

        if evaluators or on_eval is not None:  # textcl tune's pruning: a trial's config error, not a crash
            raise ConfigError("data.interactions.user_tower", "sequence trains in epochs without the trainer's "
                                                              "evaluations, so extra evaluators and textcl tune's "
                                                              "pruning (on_eval) are not offered; use user_tower text")
        return train_sequence(config, output_dir, resume=resume, stop_after_epoch=stop_after_step)
    return Trainer(config, output_dir, evaluators, on_eval).run(resume=resume, stop_after_step=stop_after_step)
