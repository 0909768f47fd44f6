"""RecBole peer arm of the recommendation benchmark: ID-based recommenders trained on exactly textcl's split and
ranked with exactly textcl's protocol.

RecBole 1.2.1 (BPR, SASRec; GRU4Rec as a protocol sanity check) is not a textcl dependency: it runs in its own
virtual environment, ``benchmarks/.cache/venvs/recbole`` (:func:`setup_venv`: ``recbole==1.2.1`` with
``--no-deps`` plus only what it imports when training these models; numpy < 2, which RecBole 1.2.1 needs), through
``benchmarks/recbole_peer.py`` (which never imports textcl).

Hand-over (:func:`export_split`): a JSON file with the catalogue (textcl's item order), every user's training
sequence (time order) and, per stage (``valid``, ``test``, ``cold`` when the task has one), the users (textcl's
order), their history (time order), target and ``seen`` items, each checked against the task's own ranking sets
(history texts, target indices, seen indices). The peer writes RecBole benchmark files from it, trains with
RecBole's defaults for the model (early stopping on the valid split), scores the whole catalogue per user and
returns textcl's 1-based pessimistic ranks; :func:`run_peer` turns them into
:func:`textcl.recommend.metrics.ranking_metrics`.

    python benchmarks/bench_recommend_peers.py --setup                 # RecBole's environment (once)
    python benchmarks/bench_recommend_peers.py --model BPR --epochs 1  # smoke: packaged ml100k, cold 0.1
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from textcl.recommend.task import _natural  # noqa: E402  (the user order of the task's ranking sets)

VENV = HERE / ".cache" / "venvs" / "recbole"
CACHE = HERE / ".cache" / "recommend"
SCRIPT = HERE / "recbole_peer.py"
RECIPE = ROOT / "recipes" / "recommend-ml100k.yaml"
MODELS = ("BPR", "SASRec", "GRU4Rec")
RECBOLE = "recbole==1.2.1"
#: What RecBole 1.2.1 imports when it trains and evaluates BPR / SASRec / GRU4Rec through recbole.config,
#: recbole.data, recbole.utils and recbole.trainer (recbole.quick_start, which imports ray, is not used; thop and
#: psutil are only imported by get_flops / get_environment, which the peer does not call). numpy < 2: RecBole's
#: Config.compatibility_settings assigns np.float_ / np.complex_ / np.unicode_, removed in numpy 2; pandas < 3:
#: under pandas 3's copy-on-write RecBole's chained ``df[field].fillna(..., inplace=True)`` does nothing. colorlog / colorama are the
#: versions RecBole pins. tensorboard: recbole.utils.utils imports torch.utils.tensorboard at module level.
REQUIREMENTS = ["torch==2.13.0", "numpy==1.26.4", "pandas==2.2.3", "scipy==1.13.1", "scikit-learn==1.6.1",
                "pyyaml==6.0.3", "tqdm==4.70.1", "texttable==1.7.0", "colorlog==4.7.2", "colorama==0.4.4",
                "tensorboard==2.21.0"]


# ---------------------------------------------------------------- RecBole's environment
def setup_venv(verbose: bool = True) -> Path:
    """Create ``benchmarks/.cache/venvs/recbole`` if it is missing or was made for other requirements (a stamp
    file ``.ready`` holds them); return its python."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".ready"
    want = "\n".join([RECBOLE + " --no-deps", *REQUIREMENTS]) + "\n"
    if python.exists() and stamp.is_file() and stamp.read_text() == want:
        return python
    t0 = time.perf_counter()
    if VENV.exists() and not stamp.is_file():
        shutil.rmtree(VENV)  # a half-made environment from an interrupted setup
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + REQUIREMENTS, check=True)
    subprocess.run(pip + ["--no-deps", RECBOLE], check=True)
    subprocess.run([str(python), "-c", "import recbole.config, recbole.data, recbole.trainer, recbole.utils"],
                   check=True)
    stamp.write_text(want)
    if verbose:
        print(f"{VENV}: installed {RECBOLE} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return python


# ---------------------------------------------------------------- the split
def stage_data(task) -> dict:
    """stage -> ``{users, histories, targets, seen}`` (item ids): the task's own ranking sets, in its user order."""
    ids = task.item_ids
    return {stage: {"users": list(s.users), "histories": [list(h) for h in s.history_items],
                    "targets": [ids[t] for t in s.targets], "seen": [[ids[j] for j in x] for x in s.seen]}
            for stage, s in task.sets.items()}


def export_split(task, folder) -> Path:
    """Write ``folder/split.json``: ``items`` (catalogue order), ``train`` (user -> training items in time
    order; the peer uses positions as timestamps) and ``stages`` (:func:`stage_data`). Returns the file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"name": task.name, "items": list(task.item_ids),
           "train": {u: list(task.train[u]) for u in sorted(task.train, key=_natural)},
           "stages": stage_data(task)}
    path = folder / "split.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- the peer
def run_peer(model: str, task, epochs: int | None = None, seed: int = 42, *,
             timeout: float = 12 * 3600, n_bootstrap: int = 1000, threads: int | None = None) -> dict:
    """Train RecBole's ``model`` (BPR, SASRec, GRU4Rec; its default settings, ``epochs`` if given) on ``task``'s
    split in the RecBole environment and rank every stage with textcl's protocol.

    Returns ``{"model", "train_s", "epochs_run", "best_epoch", "wall_s", "stages": {stage:
    ranking_metrics(ranks, k=10, n_bootstrap)}, "recbole": {its own valid/test figures}, "result": the JSON
    file, "log": the log file}``.
    """
    from textcl.recommend.metrics import ranking_metrics

    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    python = setup_venv()
    split_dir = CACHE / f"split-{task.name}"
    export_split(task, split_dir)
    tag = f"{task.name}-{model}-seed{seed}" + ("" if epochs is None else f"-e{epochs}")
    out, log = CACHE / f"{tag}.json", CACHE / f"{tag}.log"
    cmd = [str(python), str(SCRIPT), "--split", str(split_dir), "--model", model, "--out", str(out),
           "--seed", str(seed), "--work", str(CACHE / f"work-{tag}")]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    if threads:
        cmd += ["--threads", str(threads)]
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, cwd=str(HERE))
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out.is_file():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"recbole_peer.py {model} failed (exit {proc.returncode}); log {log}:\n{tail}")
    res = json.loads(out.read_text())
    stages = {}
    exported = json.loads((split_dir / "split.json").read_text())["stages"]
    for stage, r in res["stages"].items():
        if r["users"] != exported[stage]["users"]:
            raise RuntimeError(f"{out}: the {stage} users differ from the export's")
        ranks = np.asarray(r["ranks"], dtype=np.int64) - 1  # the peer's ranks are 1-based, textcl's 0-based
        stages[stage] = ranking_metrics(ranks, k=10, n_bootstrap=n_bootstrap)
    return {"model": model, "train_s": res["train_s"], "epochs_run": res["epochs_run"],
            "best_epoch": res.get("best_epoch"), "wall_s": wall, "stages": stages,
            "recbole": {"valid": res.get("recbole_valid"), "test": res.get("recbole_test")},
            "config": res["config"], "result": str(out), "log": str(log)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setup", action="store_true", help="create RecBole's environment and stop")
    ap.add_argument("--model", default="BPR", choices=MODELS)
    ap.add_argument("--epochs", type=int, default=None, help="RecBole's default (300, early stopping) without")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads in the peer")
    args = ap.parse_args()
    if args.setup:
        print(setup_venv())
        return

    from textcl.config import load_config
    from textcl.recommend.task import load_task

    c = load_config(str(RECIPE))
    task = load_task(c.data)
    r = run_peer(args.model, task, epochs=args.epochs, seed=args.seed,
                 n_bootstrap=args.bootstrap, threads=args.threads)
    print(f"{args.model}: trained {r['epochs_run']} epochs (best {r['best_epoch']}) in {r['train_s']:.1f} s "
          f"(wall {r['wall_s']:.1f} s); log {r['log']}")
    for stage, m in r["stages"].items():
        ci = m.get("ci95", {}).get("ndcg@10")
        print(f"  {stage:5s} n={m['n_users']:4d}  NDCG@10 {m['ndcg@10']:.4f}"
              + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
              + f"  Recall@10 {m['recall@10']:.4f}  MRR@10 {m['mrr@10']:.4f}")
    for stage, m in r["recbole"].items():
        if m:
            print(f"  recbole's own {stage}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()))


if __name__ == "__main__":
    main()
