"""Evaluation during and after training: score the encoder, select the best step, save the final model."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from textcl._io import atomic_write_json
from textcl.errors import ConfigError, TextclError
from textcl.eval.guards import check_held_out, load_guards, pair_keys
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
        #: evaluators reported before and after training only (the ranking test stages of data.kind interactions)
        self.test_evaluators: list = []
        if run.task is not None:  # NAME-valid selects; NAME-test and NAME-cold are reported
            from textcl.recommend.evaluator import RankingEvaluator

            self.evaluators.append(RankingEvaluator(run.task, "valid", c.eval.batch_size))
            self.test_evaluators = [RankingEvaluator(run.task, stage, c.eval.batch_size)
                                    for stage in ("test", "cold") if stage in run.task.sets]
        #: off-domain sets scored beside the others, never selected on unless ``eval.guard_select``
        self.guards = load_guards(c.eval.guard)
        taken = {s.name for s in self.sets} | {s.name for s in self.test_sets} | {
            f"{Path(d).name} ndcg@10" for d in c.eval.retrieval}
        both = [g.name for g in self.guards if g.name in taken]
        if both:  # one name, two reports: a guard's score would overwrite a task set's
            raise ConfigError("eval.guard", f"{', '.join(both)} is also a selection or test set (eval.data, "
                                            "eval.test, eval.retrieval); a set is a guard or a task set, not both")
        if self.guards:
            self._check_guards_held_out(c, run)
        #: Matryoshka prefixes reported before and after training (selection uses the full dimension)
        self.dims = sorted((c.loss.matryoshka.dims if c.loss.matryoshka is not None else []), reverse=True)

    def _check_guards_held_out(self, c, run) -> None:
        """Refuse a guard that shares pairs with what selects, tests or trains the run, or texts with what trains
        (every text of the training rows; a dropout or distill mix's texts):
        :func:`textcl.eval.guards.check_held_out`."""
        from textcl.data.beir import load_beir
        from textcl.eval.guards import beir_pair_keys, text_keys

        scored = [e for e in run.examples if e.anchor != e.positive]  # unlabeled rows repeat their text
        trained = [t for e in run.examples for t in (e.anchor, e.positive, e.negative) if t is not None]
        mix = c.data.mix
        mix_pairs = run.mix.texts if run.mix is not None and mix.objective == "pairs" else []
        mix_texts = run.mix.texts if run.mix is not None and mix.objective != "pairs" else []
        sets = [("eval.data", s.name, pair_keys(s.sentences1, s.sentences2)) for s in self.sets]
        sets += [("eval.retrieval", str(d), set().union(*beir_pair_keys(load_beir(d, "test"))))
                 for d in c.eval.retrieval]
        sets += [("eval.test", s.name, pair_keys(s.sentences1, s.sentences2)) for s in self.test_sets]
        if scored:
            sets.append(("data.path", str(c.data.path), pair_keys([e.anchor for e in scored],
                                                                   [e.positive for e in scored])))
        if mix_pairs:
            sets.append(("data.mix.path", str(mix.path), pair_keys([r[0] for r in mix_pairs],
                                                                    [r[1] for r in mix_pairs])))
        texts = ([("data.path", str(c.data.path), text_keys(trained))] if trained else [])
        texts += [("data.mix.path", str(mix.path), text_keys(mix_texts))] if mix_texts else []
        check_held_out(self.guards, sets, task_texts=texts)

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
            # a ranking evaluator answers whole metric dicts and takes the bootstrap; others answer numbers
            found = (evaluator(encoder, n_bootstrap=n_bootstrap) if getattr(evaluator, "takes_bootstrap", False)
                     else evaluator(encoder))
            for name, value in found.items():
                out[name] = dict(value) if isinstance(value, dict) else {"score": float(value)}
        self.clock.eval_s += time.perf_counter() - t0
        return out

    def evaluate_guards(self, encoder: Encoder, n_bootstrap: int = 0) -> dict:
        """name -> ``{score, n, metric, guard: True}`` (and ``ci95`` with ``n_bootstrap``) for each guard set."""
        t0 = time.perf_counter()
        encoder.encode_bf16 = self.run.precision == "bf16"
        out = {g.name: {**g.evaluate(encoder, n_bootstrap=n_bootstrap, batch_size=self.run.config.eval.batch_size),
                        "metric": g.metric, "guard": True} for g in self.guards}
        self.clock.eval_s += time.perf_counter() - t0
        return out

    def before(self, state: dict, log, guards_only: bool = False) -> None:
        """Score the starting model on every set (main process; ``guards_only``: the guard sets, which
        ``eval.before: false`` still scores), into ``state["before"]`` and the log."""
        encoder = self.run.encoder
        state["before"] = {} if guards_only else self.at_dims(encoder, lambda enc: {
            **self.evaluate(enc, self.sets, evaluators=self.evaluators),
            **self.evaluate(enc, self.test_sets, evaluators=self.test_evaluators, with_all=True)})
        state["before"].update(self.evaluate_guards(encoder))
        for name, m in state["before"].items():
            log.write(step=0, eval_name=name, eval_score=f"{metric_value(m):.4f}")
            self.run.acc.print(f"before training: {name}{' (guard)' if m.get('guard') else ''} "
                               f"{metric_value(m):.2f}")

    def due(self, step: int, last: bool) -> bool:
        every = self.run.config.eval.every
        selects = self.sets or self.evaluators or (self.guards and self.run.config.eval.guard_select)
        return bool(selects and every and (step % every == 0 or last))

    def averaged(self):
        """A context in which the encoder holds the run's weight average (``optim.ema_decay``), if any."""
        ema = self.run.ema
        return ema.applied() if ema is not None else contextlib.nullcontext()

    @staticmethod
    def score(metrics: dict) -> float:
        """The selection score: the mean over the evaluated sets and evaluator values (``all`` excluded)."""
        return float(np.mean([metric_value(m) for k, m in metrics.items() if k != "all"]))

    def selection_score(self, metrics: dict, guards: dict) -> float:
        """:meth:`score` of ``metrics``; with ``eval.guard_select``, the mean of that and the guards' mean (the
        task and the guards weigh the same, however many sets each has)."""
        parts = [self.score(metrics)] if any(k != "all" for k in metrics) else []
        if self.run.config.eval.guard_select and guards:
            parts.append(self.score(guards))
        return float(np.mean(parts)) if parts else float("nan")

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
        guards = self.evaluate_guards(run.encoder)
        took = self.clock.eval_s - before
        score = self.selection_score(metrics, guards)
        selected = {**metrics, **(guards if run.config.eval.guard_select else {})}
        metrics = {**metrics, **guards}
        for name, m in metrics.items():
            log.write(step=step, eval_name=name, eval_score=f"{metric_value(m):.4f}", eval_seconds=f"{took:.2f}")
        if run.trackers:
            acc.log({f"eval/{k}": metric_value(m) for k, m in metrics.items()}, step=step)
        improved = state["best"] is None or score > state["best"]
        state["selected_on"] = [k for k in selected if k != "all"]
        share = self.clock.report()["eval_share"]
        acc.print(f"step {step}: " + ", ".join(f"{k}{' (guard)' if m.get('guard') else ''} {metric_value(m):.2f}"
                                               for k, m in metrics.items())
                  + (" (best so far)" if improved else "")
                  + f" [evaluation {took:.1f} s; {100 * share:.0f}% of this run's time so far"
                  + ("; raise eval.every to train more between evaluations]" if share > 0.3 else "]"))
        if improved:
            state["best"], state["best_step"] = score, step
            if run.config.eval.select_best:
                # served as it is, best-model/ holds the user-text settings of a recommendation run too
                run.encoder.save(run.out / "best-model",
                                 extra_json=run.task.settings_files() if run.task is not None else None)
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

    def choose_wise(self, final: Encoder) -> dict | None:
        """``train.wise_alpha``: set ``final``'s weights to ``(1 - a) * starting + a * trained`` (WiSE-FT), the
        starting weights being those the run loaded (kept on the CPU since). ``auto`` scores a grid of a (0,
        0.2, ..., 1, then the chosen one's neighbours at 0.1) on the selection sets and the guard sets, never
        the test sets, and keeps the best selection score among the a whose guards all end within
        ``eval.guard_tolerance`` of the starting model's (a = 0, which always qualifies); ties go to the larger
        a. Returns ``{"alpha", "requested", "rule", "grid"}``, or None when ``wise_alpha`` is not set."""
        from textcl.models.merge import interpolate

        c = self.run.config
        requested = c.train.wise_alpha
        if requested is None:
            return None
        start = self.run.start_state
        trained = {k: v.detach().to("cpu", copy=True) for k, v in final.state_dict().items()}
        # the SimCSE head (model.mlp_head) is never saved: a best-model/ loaded back has none, and it is not merged
        base = {k: v for k, v in start.items() if k in trained or not k.startswith("mlp.")}
        head = {k: v for k, v in trained.items() if k.startswith("mlp.") and k not in base}
        body = {k: v for k, v in trained.items() if k not in head}
        names = (f"the starting model {c.model.name}", "the trained model")

        def apply(alpha: float) -> None:
            merged = interpolate(base, body, alpha, names=names)
            final.load_state_dict({**merged, **head})

        tolerance = float(c.eval.guard_tolerance)
        grid: dict[float, dict] = {}

        def score_at(alpha: float) -> None:
            apply(alpha)
            sets = self.evaluate(final, self.sets, evaluators=self.evaluators)
            guards = self.evaluate_guards(final)
            task = self.score(sets)
            grid[alpha] = {"score": round(task, 4) if np.isfinite(task) else None,
                           **{k: round(metric_value(m), 4) for k, m in {**sets, **guards}.items() if k != "all"}}
            self.run.acc.print(f"wise_alpha {alpha:.1f}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in grid[alpha].items() if k != "score" and v is not None))

        def allowed(alpha: float) -> bool:
            row, first = grid[alpha], grid[0.0]
            return all(row[g.name] is not None and np.isfinite(row[g.name])
                       and row[g.name] >= first[g.name] - tolerance for g in self.guards)

        def best() -> float:
            ok = [a for a in grid if grid[a]["score"] is not None and (a == 0.0 or allowed(a))]
            if not ok:
                raise TextclError("train.wise_alpha auto: no merge has a finite score on the selection sets")
            return max(ok, key=lambda a: (grid[a]["score"], a))

        if requested == "auto":
            for alpha in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
                score_at(alpha)
            coarse = best()
            for alpha in (round(coarse - 0.1, 1), round(coarse + 0.1, 1)):
                if 0.0 <= alpha <= 1.0 and alpha not in grid:
                    score_at(alpha)
            chosen = best()
        else:
            chosen = float(requested)
        apply(chosen)
        self.run.acc.print(f"wise_alpha {requested} -> {chosen:.2f}: saved weights are {1 - chosen:.2f} x the "
                           f"starting model + {chosen:.2f} x the trained one"
                           + (f" (the best on {', '.join(s.name for s in self.sets) or 'the selection sets'} "
                              f"whose guards stay within {tolerance:g} points of the start)"
                              if requested == "auto" else ""))
        return {"alpha": chosen, "requested": requested,
                "rule": ("best selection score among the alphas whose guard sets all end within "
                         "eval.guard_tolerance of the starting model" if requested == "auto" else "given"),
                "grid": {f"{a:.1f}": {**v, "guards_within_tolerance": allowed(a)}
                         for a, v in sorted(grid.items())}}

    def guard_report(self, before: dict, after: dict) -> dict:
        """name -> ``{before, after, change, ci95, metric, fell}`` for each guard set, where ``fell`` is a fall
        of more than ``eval.guard_tolerance`` points below the starting score; printed, with a warning."""
        tolerance = float(self.run.config.eval.guard_tolerance)
        report = {}
        for g in self.guards:
            a = after[g.name]
            b = before.get(g.name)
            start = metric_value(b) if b else None
            change = None if start is None else round(a["score"] - start, 4)
            report[g.name] = {"before": None if start is None else round(start, 4), "after": round(a["score"], 4),
                              "change": change, "ci95": a.get("ci95"), "metric": g.metric, "n": a["n"],
                              "fell": change is not None and change < -tolerance}
            ci = a.get("ci95")
            self.run.acc.print(f"guard {g.name}: " + (f"{start:.2f} -> " if start is not None else "")
                               + f"{a['score']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
                               + (f" ({change:+.2f})" if change is not None else ""))
        fell = [n for n, r in report.items() if r["fell"]]
        if fell:
            self.run.acc.print(f"textcl: warning: guard set(s) {', '.join(fell)} fell more than "
                               f"eval.guard_tolerance ({tolerance:g} points) below the starting model: the "
                               "fine-tuning cost them; train.wise_alpha: auto (or textcl merge) trades some of "
                               "the task's gain back")
        return report

    def _finish(self, final: Encoder, final_doc: Encoder | None, state: dict, steps: int, model_dir: Path) -> dict:
        """Score ``final`` with bootstrap CIs and write it, its card, ``metrics.json`` and the plot."""
        run, acc, c = self.run, self.run.acc, self.run.config
        out = run.out
        wise = self.choose_wise(final)
        length_choice = self.choose_length(final, final_doc)
        selection: list[str] = []  # the selection sets' names, for a run that never evaluated while training

        def score_after(enc: Encoder) -> dict:
            chosen = self.evaluate(enc, self.sets, evaluators=self.evaluators, n_bootstrap=N_BOOTSTRAP)
            selection[:] = selection or [k for k in chosen if k != "all"]
            return {**chosen, **self.evaluate(enc, self.test_sets, evaluators=self.test_evaluators,
                                              n_bootstrap=N_BOOTSTRAP, with_all=True)}

        after = self.at_dims(final, score_after)
        after.update(self.evaluate_guards(final, n_bootstrap=N_BOOTSTRAP))
        guard = self.guard_report(state.get("before", {}), after) if self.guards else None
        metrics = {"before": state.get("before", {}), "after": after, "best_step": state.get("best_step"),
                   "guard": guard, "guard_tolerance": float(c.eval.guard_tolerance) if self.guards else None,
                   "wise": wise,
                   "best_score": state.get("best"),
                   # the sets the best step was chosen on; without evaluations while training, those that would have
                   "selected_on": state.get("selected_on") or selection + (
                       [g.name for g in self.guards] if c.eval.guard_select else []),
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
        final.save(model_dir, model_card=model_card(c, metrics, citation),
                   extra_json=run.task.settings_files() if run.task is not None else None)
        if final_doc is not None:
            final_doc.save(out / "model-document")
        if run.task is not None:  # data.kind interactions: the catalogue to index
            run.task.write_items(out)
        atomic_write_json(out / "metrics.json", metrics)
        if c.train.plot:
            labels = {name: metric_label(name, m) for name, m in after.items()}
            plot_curves(out / "log.csv", out / "training.png", title=c.name, labels=labels)
        return metrics
