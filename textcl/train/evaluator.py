"""Evaluation during and after training: score the encoder, select the best step, save the final model."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from textcl._io import atomic_write_json
from textcl.eval.stats import N_BOOTSTRAP
from textcl.eval.sts import as_sts_list, evaluate_sts
from textcl.models import Encoder
from textcl.train.build import Run
from textcl.train.card import metric_label, metric_value, model_card
from textcl.train.logs import plot_curves
from textcl.versions import environment


#: ``save_max_seq_len: auto`` saves the (shorter) training length only when it scores this many points (x100)
#: higher on the selection sets: STS-B dev barely moves with the length (86.72 at 256 and 86.61 at 32 tokens
#: for MiniLM), so a smaller lead is noise, and the cut would apply to every longer text the model encodes
LENGTH_MARGIN = 0.5


def retrieval_evaluator(beir_dir: str):
    """An evaluator: nDCG@10 x100 on a BEIR folder's test split, named ``<folder> ndcg@10``."""
    def evaluate(encoder) -> dict[str, float]:
        from textcl.eval.retrieval import evaluate_retrieval

        return {f"{Path(beir_dir).name} ndcg@10": 100.0 * evaluate_retrieval(encoder, beir_dir)["ndcg@10"]}
    return evaluate


@dataclass
class Clock:
    """Seconds spent training and evaluating so far."""

    train_s: float = 0.0
    eval_s: float = 0.0

    def report(self) -> dict:
        total = self.train_s + self.eval_s
        return {"train_s": round(self.train_s, 2), "eval_s": round(self.eval_s, 2),
                "eval_share": round(self.eval_s / total, 4) if total else 0.0}


class Evaluator:
    """The run's evaluations: ``eval.data`` STS sets and ``eval.retrieval`` folders (plus extra evaluators,
    each ``fn(encoder) -> {name: score}``) select the best step; ``eval.test`` sets are reported before and
    after training only."""

    def __init__(self, run: Run, extra_evaluators=(), clock: Clock | None = None):
        c = run.config
        self.run = run
        self.clock = clock or Clock()
        self.sets = as_sts_list(c.eval.data) if c.eval.data else []
        self.evaluators = list(extra_evaluators) + [retrieval_evaluator(d) for d in c.eval.retrieval]
        self.test_sets = as_sts_list(c.eval.test) if c.eval.test else []
        #: Matryoshka prefixes reported before and after training (selection uses the full dimension)
        self.dims = sorted((c.loss.matryoshka.dims if c.loss.matryoshka is not None else []), reverse=True)

    def at_dims(self, encoder: Encoder, evaluate) -> dict:
        """``evaluate(encoder)`` at the full dimension, then at each smaller Matryoshka dimension ``d``
        (embeddings cut to ``d`` and renormalised), named ``<name>@<d>d``."""
        out = evaluate(encoder)
        for d in self.dims:
            if d >= encoder.dim:
                continue
            encoder.truncate_dim = d
            try:
                out.update({f"{name}@{d}d": m for name, m in evaluate(encoder).items() if name != "all"})
            finally:
                encoder.truncate_dim = None
        return out

    def evaluate(self, encoder: Encoder, sets, *, evaluators=(), n_bootstrap: int = 0, with_all: bool = False) -> dict:
        """name -> metrics: each STS set's ``{spearman, pearson, n, ci95}`` (plus SentEval's ``all`` over several
        sets when ``with_all``), and each evaluator's values as ``{score}``."""
        out: dict = {}
        t0 = time.perf_counter()
        # evaluation encodes in the run's precision (bf16 evaluates about twice as fast where it is native)
        encoder.encode_bf16 = self.run.precision == "bf16"
        if sets:
            report = evaluate_sts(encoder, sets, n_bootstrap=n_bootstrap, batch_size=self.run.config.eval.batch_size)
            out.update(report["sets"])
            if with_all and "all" in report:
                out["all"] = report["all"]
        for evaluator in evaluators:
            for name, value in evaluator(encoder).items():
                out[name] = {"score": float(value)}
        self.clock.eval_s += time.perf_counter() - t0
        return out

    def before(self, state: dict, log) -> None:
        """Score the starting model on every set (main process), into ``state["before"]`` and the log."""
        encoder = self.run.encoder
        state["before"] = self.at_dims(encoder, lambda enc: {
            **self.evaluate(enc, self.sets, evaluators=self.evaluators),
            **self.evaluate(enc, self.test_sets, with_all=True)})
        for name, m in state["before"].items():
            log.write(step=0, eval_name=name, eval_score=f"{metric_value(m):.4f}")
            self.run.acc.print(f"before training: {name} {metric_value(m):.2f}")

    def due(self, step: int, last: bool) -> bool:
        every = self.run.config.eval.every
        return bool((self.sets or self.evaluators) and every and (step % every == 0 or last))

    def averaged(self):
        """A context in which the encoder holds the run's weight average (``optim.ema_decay``), if any."""
        ema = self.run.ema
        return ema.applied() if ema is not None else contextlib.nullcontext()

    @staticmethod
    def score(metrics: dict) -> float:
        """The selection score: the mean over the evaluated sets and evaluator values (``all`` excluded)."""
        return float(np.mean([metric_value(m) for k, m in metrics.items() if k != "all"]))

    def select(self, step: int, state: dict, log) -> float | None:
        """Evaluate at ``step``, log it, and save the encoder(s) as ``best-model`` when the score improved.
        Returns the step's selection score on the main process, None on the others."""
        run, acc = self.run, self.run.acc
        score = None
        if acc.is_main_process:
            with self.averaged():
                score = self._select(step, state, log)
        acc.wait_for_everyone()
        return score

    def _select(self, step: int, state: dict, log) -> float:
        """Evaluate (in whatever weights the encoder holds now), log, and save ``best-model`` if improved."""
        run, acc = self.run, self.run.acc
        before = self.clock.eval_s
        metrics = self.evaluate(run.encoder, self.sets, evaluators=self.evaluators)
        took = self.clock.eval_s - before
        score = self.score(metrics)
        for name, m in metrics.items():
            log.write(step=step, eval_name=name, eval_score=f"{metric_value(m):.4f}", eval_seconds=f"{took:.2f}")
        if run.trackers:
            acc.log({f"eval/{k}": metric_value(m) for k, m in metrics.items()}, step=step)
        improved = state["best"] is None or score > state["best"]
        state["selected_on"] = [k for k in metrics if k != "all"]
        share = self.clock.report()["eval_share"]
        acc.print(f"step {step}: " + ", ".join(f"{k} {metric_value(m):.2f}" for k, m in metrics.items())
                  + (" (best so far)" if improved else "")
                  + f" [evaluation {took:.1f} s; {100 * share:.0f}% of this run's time so far"
                  + ("; raise eval.every to train more between evaluations]" if share > 0.3 else "]"))
        if improved:
            state["best"], state["best_step"] = score, step
            if run.config.eval.select_best:
                run.encoder.save(run.out / "best-model")
                if run.config.model.two_tower:
                    run.doc_encoder.save(run.out / "best-model-document")
        return score

    def finish(self, state: dict, steps: int) -> tuple[Path, dict]:
        """Take the best (or last) encoder, score it with bootstrap CIs, and write ``model/`` with its card,
        ``metrics.json`` and ``training.png``. Returns the model folder and the metrics (empty off the main
        process)."""
        run, acc, c = self.run, self.run.acc, self.run.config
        out = run.out
        model_dir = out / "model"
        metrics: dict = {}
        if acc.is_main_process:
            with contextlib.ExitStack() as stack:
                final, final_doc = run.encoder, (run.doc_encoder if c.model.two_tower else None)
                if c.eval.select_best and (out / "best-model").exists():
                    final = Encoder.load(out / "best-model", device=acc.device)
                    if c.model.two_tower:
                        final_doc = Encoder.load(out / "best-model-document", device=acc.device)
                else:  # the last step's weights: their average, when the run keeps one
                    stack.enter_context(self.averaged())
                metrics = self._finish(final, final_doc, state, steps, model_dir)
        acc.wait_for_everyone()
        acc.end_training()
        return model_dir, metrics

    def choose_length(self, final: Encoder, final_doc: Encoder | None) -> dict | None:
        """``model.save_max_seq_len: auto``: score the selection sets (never the test sets) at the training length
        and at the model's own limit, and keep the better on ``final`` (and ``final_doc``); the training length
        must score at least :data:`LENGTH_MARGIN` points higher, else the model's own limit is kept. Returns
        ``{"train": {"length", "score"}, "base": {...}, "chosen"}``, or None when there is nothing to choose
        (no selection sets, or training already used the whole limit)."""
        c = self.run.config
        base, train = final.max_seq_length, min(c.model.max_seq_len, final.max_seq_length)
        if c.model.save_max_seq_len != "auto" or train >= base or not (self.sets or self.evaluators):
            return None
        scores = {}
        for name, length in (("base", base), ("train", train)):
            for enc in (final, final_doc):
                if enc is not None:
                    enc.max_seq_length = length
            scores[name] = {"length": length,
                            "score": round(self.score(self.evaluate(final, self.sets, evaluators=self.evaluators)), 4)}
        # the shorter length must win clearly: it truncates everything the model will ever encode
        chosen = "train" if scores["train"]["score"] > scores["base"]["score"] + LENGTH_MARGIN else "base"
        for enc in (final, final_doc):
            if enc is not None:
                enc.max_seq_length = scores[chosen]["length"]
        self.run.acc.print(f"saved length: {scores[chosen]['length']} tokens (selection score "
                           f"{scores['train']['score']:.2f} at the training length {train}, "
                           f"{scores['base']['score']:.2f} at the model's {base})")
        return {**scores, "chosen": scores[chosen]["length"]}

    def _finish(self, final: Encoder, final_doc: Encoder | None, state: dict, steps: int, model_dir: Path) -> dict:
        """Score ``final`` with bootstrap CIs and write it, its card, ``metrics.json`` and the plot."""
        run, acc, c = self.run, self.run.acc, self.run.config
        out = run.out
        length_choice = self.choose_length(final, final_doc)
        after = self.at_dims(final, lambda enc: {
            **self.evaluate(enc, self.sets, evaluators=self.evaluators, n_bootstrap=N_BOOTSTRAP),
            **self.evaluate(enc, self.test_sets, n_bootstrap=N_BOOTSTRAP, with_all=True)})
        metrics = {"before": state.get("before", {}), "after": after, "best_step": state.get("best_step"),
                   "best_score": state.get("best"), "selected_on": state.get("selected_on"),
                   "steps": steps, "examples": len(run.examples), "model": c.model.name,
                   "max_seq_len": {**run.max_seq_len, "saved": final.max_seq_length,
                                   **({"auto": length_choice} if length_choice else {})},
                   "precision": run.precision_choice.to_dict() if run.precision_choice is not None else
                   {"requested": run.precision, "resolved": run.precision, "bf16_over_fp32": None},
                   "eval_precision": "bf16" if run.precision == "bf16" else "fp32",
                   "chunk_overhead_tokens": run.encoder.chunk_overhead, "threads": torch.get_num_threads(),
                   "thread_governor": run.threads.to_dict() if run.threads is not None else None,
                   "mini_batch_size": run.mini_batch.to_dict() if run.mini_batch is not None else None,
                   "time": self.clock.report(), "versions": environment(), "config": c.to_dict()}
        acc.print(f"time: training {metrics['time']['train_s']:.1f} s, evaluation {metrics['time']['eval_s']:.1f} s "
                  f"({100 * metrics['time']['eval_share']:.0f}% of the total)")
        citation = acc.unwrap_model(run.loss_fn).citation
        final.name = c.name
        final.save(model_dir, model_card=model_card(c, metrics, citation))
        if final_doc is not None:
            final_doc.save(out / "model-document")
        atomic_write_json(out / "metrics.json", metrics)
        if c.train.plot:
            labels = {name: metric_label(name, m) for name, m in after.items()}
            plot_curves(out / "log.csv", out / "training.png", title=c.name, labels=labels)
        return metrics
