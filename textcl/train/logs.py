"""Run logs: a CSV written as training goes, and a PNG of the loss and evaluation curves at the end."""
from __future__ import annotations

import csv
from pathlib import Path

from textcl._io import atomic_path
from textcl.data.readers import csv_reader, read_lines

COLUMNS = ["step", "epoch", "loss", "lr", "temperature", "pairs_per_s", "eval_name", "eval_score", "eval_seconds"]


class CSVLog:
    """Append rows to ``path`` (created with a header); each row is flushed at once."""

    def __init__(self, path: Path, resume_from_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from_step is not None and self.path.exists():
            # drop rows past the checkpoint we resume from: they will be logged again
            rows = read_log(self.path)
            keep = [r for r in rows if int(r["step"]) <= resume_from_step]
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, COLUMNS)
                writer.writeheader()
                writer.writerows(keep)
        elif not self.path.exists() or resume_from_step is None:
            with open(self.path, "w", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, COLUMNS).writeheader()

    def write(self, **row) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, COLUMNS).writerow({k: row.get(k, "") for k in COLUMNS})



class Reporter:
    """What each optimizer step reports: the progress bar (loss, lr, pairs/s), a ``log.csv`` row every
    ``train.log_every`` steps (and at step 1), the trackers' metrics, and the training time on ``clock``."""

    def __init__(self, run, log: CSVLog | None, start_step: int, clock):
        self.run, self.log, self.clock = run, log, clock
        c = run.config
        self.pairs_per_step = c.train.batch_size * c.train.grad_accum * run.world
        self.rate: float | None = None
        self.pbar = None
        if run.acc.is_main_process:
            from tqdm.auto import tqdm

            self.pbar = tqdm(total=run.total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def step(self, step: int, epoch: int, loss: float, seconds: float) -> None:
        run = self.run
        self.clock.train_s += seconds
        pairs = self.pairs_per_step / seconds
        self.rate = pairs if self.rate is None else 0.9 * self.rate + 0.1 * pairs
        lr = run.scheduler.get_last_lr()[0]
        temp = run.acc.unwrap_model(run.loss_fn).temperature
        temp = float(temp) if not isinstance(temp, float) else temp
        if self.pbar is not None:
            self.pbar.update(1)
            self.pbar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", pairs_s=f"{self.rate:.0f}")
        if run.acc.is_main_process and (step % run.config.train.log_every == 0 or step == 1):
            self.log.write(step=step, epoch=epoch, loss=f"{loss:.6f}", lr=f"{lr:.6g}", temperature=f"{temp:.5f}",
                           pairs_per_s=f"{pairs:.1f}")
        if run.trackers:
            run.acc.log({"train/loss": loss, "train/lr": lr, "train/pairs_per_s": pairs}, step=step)

    def close(self) -> None:
        if self.pbar is not None:
            self.pbar.close()


def read_log(path: Path) -> list[dict]:
    """The rows of a run's ``log.csv``, as dicts of strings."""
    return list(csv_reader(path, read_lines(path), dicts=True))


def plot_curves(log_csv: Path, out_png: Path, title: str = "", labels: dict[str, str] | None = None) -> Path | None:
    """Plot training loss and each evaluation's score against step; returns the PNG path (None without data).

    ``labels`` maps an evaluation name to what its score measures (``Spearman x100 (cosine)``,
    ``nDCG@10 x100``), shown in the legend; the default says Spearman x100 for every curve."""
    labels = labels or {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(Path(log_csv))
    loss = [(int(r["step"]), float(r["loss"])) for r in rows if r["loss"]]
    evals: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["eval_name"]:
            evals.setdefault(r["eval_name"], []).append((int(r["step"]), float(r["eval_score"])))
    if not loss and not evals:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if loss:
        axes[0].plot(*zip(*loss), lw=1)
    axes[0].set(xlabel="step", ylabel="loss", title="training loss")
    for name, points in evals.items():
        axes[1].plot(*zip(*points), marker="o", label=f"{name}: {labels.get(name, 'Spearman x100')}")
    kinds = sorted({labels.get(name, "Spearman x100") for name in evals})
    axes[1].set(xlabel="step", ylabel=kinds[0] if len(kinds) == 1 else "score x100", title="evaluation")
    if evals:
        axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_png) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return Path(out_png)
