"""Train a RecBole 1.2.1 model on textcl's exported split and rank every stage with textcl's protocol.

Runs INSIDE the RecBole environment (``benchmarks/.cache/venvs/recbole``, made by
``bench_recommend_peers.setup_venv``); it never imports textcl.

    python recbole_peer.py --split DIR --model BPR|SASRec|GRU4Rec --out FILE.json [--epochs N] [--seed S]

``DIR/split.json`` (``bench_recommend_peers.export_split``): ``items`` (textcl's catalogue, in its order),
``train`` (user -> training items in time order) and ``stages`` (stage -> ``users``, ``histories`` (time order),
``targets``, ``seen``).

1. RecBole benchmark files in a fresh work dir (``--work``, default ``FILE-work`` next to ``--out``):
   ``textcl.{train,valid,test}.inter`` with ``user_id:token item_id:token timestamp:float`` (a user's position
   in their own sequence is the timestamp: only the order matters). ``train`` holds every training interaction,
   ``valid`` / ``test`` the target of each user of textcl's valid / test stage. Sequential models read
   benchmark files without augmenting them (RecBole's ``SequentialDataset._benchmark_presets``), so for them
   each row also carries ``item_id_list:token_seq``, the items before it (at most ``MAX_ITEM_LIST_LENGTH``,
   RecBole's default 50, the most recent kept): in ``train`` one row per training position ``t >= 1`` (what
   RecBole's own ``data_augmentation`` builds), in ``valid`` / ``test`` the stage's history.
2. Training with RecBole's default configuration for the model; only what this needs is set (``config`` in
   the output): the data path and ``benchmark_filename``, ``load_col`` (RecBole loads only user and item ids
   by default, which drops the sequence column), the metrics with ``topk [10]`` and
   ``valid_metric NDCG@10``, the seed, ``epochs`` if ``--epochs`` is given, and for SASRec / GRU4Rec (whose
   default ``loss_type`` is CE) ``train_neg_sample_args: None``, without which RecBole 1.2.1 refuses CE, and
   ``alias_of_item_id: [item_id_list]``, without which the history column gets its own id space (checked:
   the test scores computed here equal those of RecBole's own test batches, ``check_test_scores_max_abs_diff``).
   Full ranking (``eval_args`` mode ``full``) is already the default of both model types and is checked, not
   set. Early stopping on the valid split (``stopping_step`` 10 validations) is RecBole's default and kept. The
   pipeline is ``run_recbole``'s without ``get_flops`` / ``get_environment`` (thop, psutil) and without
   ``recbole.quick_start`` (which imports ray).
3. The best checkpoint is loaded and, for every user of every exported stage, the whole textcl catalogue is
   scored: BPR from the user's embedding (a user RecBole never saw scores every item lowest), SASRec / GRU4Rec
   by ``full_sort_predict`` on the stage's history (last ``MAX_ITEM_LIST_LENGTH`` items). Rank of the target
   (1-based, textcl's rule): 1 + the number of OTHER items not in the user's ``seen`` list whose score is >=
   the target's (ties count against the target; NaN scores count as the lowest).

Output (written atomically): ``{"model", "stages": {stage: {"users", "ranks"}}, "train_s", "epochs_run",
"best_epoch", "epoch_train_s", "epoch_valid_s", "recbole_version", "torch_version", "device", "config" (the
non-default settings), "defaults" (RecBole's defaults that matter, as used), "recbole_valid" / "recbole_test"
(RecBole's own figures of the best model: no seen-item masking for sequential models), "items": {catalogue,
trained, in_vocab}, "users_in_vocab", "scoring" (per stage: users left unscored, history items dropped),
"check_test_scores_max_abs_diff", ...}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

DATASET = "textcl"
STAGES = ("valid", "test")  # the RecBole files besides train; "cold" is only ranked, never given to RecBole
MARKER = ".recbole_peer_work"
SEQUENTIAL = {"SASRec", "GRU4Rec"}
#: RecBole's default field names (properties/dataset/sample.yaml), not changed here
UID, IID, TIME, ITEM_LIST = "user_id", "item_id", "timestamp", "item_id_list"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", required=True, help="the folder holding split.json")
    ap.add_argument("--model", required=True, choices=["BPR", "SASRec", "GRU4Rec"])
    ap.add_argument("--out", required=True, help="the result JSON")
    ap.add_argument("--epochs", type=int, default=None, help="RecBole's default (300, early stopping) without")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--work", default=None, help="RecBole's files, logs and checkpoints (recreated)")
    ap.add_argument("--batch-users", type=int, default=256, help="users scored at once")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (torch's default without; 1 is faster on a CPU shared with other work)")
    return ap.parse_args(argv)


def fresh_dir(path: Path) -> None:
    """Empty ``path`` (only a folder this script made, or an empty / missing one) and mark it as ours: RecBole
    reloads a dataset it finds in its checkpoint folder, so a stale one must not survive."""
    if path.exists():
        if not (path / MARKER).is_file() and any(path.iterdir()):
            raise SystemExit(f"{path}: not empty and not a recbole_peer work folder; give another --work")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).touch()


def _check_token(x: str) -> str:
    if not x or any(c.isspace() for c in x):
        raise SystemExit(f"id {x!r}: RecBole's atomic files cannot hold an empty id or one with whitespace")
    return x


def write_atomic(folder: Path, data: dict, sequential: bool, max_len: int) -> None:
    """``DATASET.{train,valid,test}.inter`` in ``folder`` (see the module docstring)."""
    head = [f"{UID}:token"] + ([f"{ITEM_LIST}:token_seq"] if sequential else []) + [f"{IID}:token", f"{TIME}:float"]

    def row(user, before, item, t):
        cells = [_check_token(user)]
        if sequential:
            cells.append(" ".join(_check_token(i) for i in before[-max_len:]))
        return "\t".join(cells + [_check_token(item), f"{t}"])

    lines = {"train": [], "valid": [], "test": []}
    for user, seq in data["train"].items():
        for t, item in enumerate(seq):
            if sequential and t == 0:
                continue  # nothing before it: RecBole's augmentation starts at the second item too
            lines["train"].append(row(user, seq[:t], item, t))
    for stage in STAGES:
        s = data["stages"][stage]
        for user, hist, target in zip(s["users"], s["histories"], s["targets"]):
            lines[stage].append(row(user, hist, target, len(hist)))
    for name, rows in lines.items():
        if not rows:
            raise SystemExit(f"split: no {name} rows")
        (folder / f"{DATASET}.{name}.inter").write_text("\t".join(head) + "\n" + "\n".join(rows) + "\n")


def catalogue_scores(model, dataset, data: dict, stage: str, cat_ids: torch.Tensor, sequential: bool,
                     max_len: int, device, batch_users: int) -> tuple[np.ndarray, dict]:
    """``(U, N)`` float32 scores of the N catalogue items for the users of ``stage``; ``cat_ids[j]`` is item
    ``j``'s RecBole id, or -1 for an item RecBole never trained on, which scores ``-inf``: the LOWEST score,
    below every trained item (tied with the other untrained ones, which the pessimistic rank counts against
    the target)."""
    from recbole.data.interaction import Interaction

    s = data["stages"][stage]
    uid_map = dataset.field2token_id[UID]
    iid_map = dataset.field2token_id[IID]
    n_users, n_items = len(s["users"]), len(cat_ids)
    out = np.full((n_users, n_items), -np.inf, dtype=np.float32)
    known = cat_ids >= 0
    cols = cat_ids[known].to(device)
    info = {"users_unscored": 0, "history_items_dropped": 0}
    for a in range(0, n_users, batch_users):
        rows, inputs = [], []
        for u in range(a, min(a + batch_users, n_users)):
            if sequential:
                # every history item RecBole has an id for (its own test rows feed the validation item too,
                # trained or not); an item outside RecBole's vocabulary (in no file) cannot be embedded: dropped
                seq = [iid_map[i] for i in s["histories"][u] if i in iid_map]
                info["history_items_dropped"] += len(s["histories"][u]) - len(seq)
                seq = seq[-max_len:]
                if seq:
                    rows.append(u)
                    inputs.append(seq)
            elif s["users"][u] in uid_map:
                rows.append(u)
                inputs.append(uid_map[s["users"][u]])
        info["users_unscored"] += min(a + batch_users, n_users) - a - len(rows)
        if not rows:
            continue
        if sequential:
            length = torch.tensor([len(x) for x in inputs], dtype=torch.long)
            items = torch.zeros(len(inputs), int(length.max()), dtype=torch.long)  # 0 = [PAD], RecBole's layout:
            for r, x in enumerate(inputs):  # left-aligned, padded on the right
                items[r, :len(x)] = torch.tensor(x, dtype=torch.long)
            batch = Interaction({model.ITEM_SEQ: items, model.ITEM_SEQ_LEN: length}).to(device)
        else:
            batch = Interaction({model.USER_ID: torch.tensor(inputs, dtype=torch.long)}).to(device)
        with torch.no_grad():
            scores = model.full_sort_predict(batch).view(len(rows), -1).float()
        out[np.asarray(rows)[:, None], np.flatnonzero(known.numpy())[None, :]] = scores[:, cols].cpu().numpy()
    return out, info


def same_as_recbole(model, test_data, dataset, stage: dict, scores: np.ndarray, cat_ids: torch.Tensor,
                    device) -> float:
    """The largest difference between the test scores of :func:`catalogue_scores` (trained items) and those
    RecBole computes for its own test rows (the batches of its ``FullSortEvalDataLoader``): 0 when the
    histories (sequential) or users (BPR) fed here are RecBole's."""
    uid_tokens = dataset.field2id_token[UID]
    row_of = {u: r for r, u in enumerate(stage["users"])}
    known = (cat_ids >= 0).numpy()
    cols = cat_ids[cat_ids >= 0]
    worst = 0.0
    with torch.no_grad():
        for batch in test_data:  # (interaction, ...): a test row each (sequential) or a test user each (BPR)
            inter = batch[0]
            users = inter[UID].cpu().numpy()
            theirs = model.full_sort_predict(inter.to(device)).view(len(users), -1)
            rows = [row_of[uid_tokens[u]] for u in users]
            diff = np.abs(scores[rows][:, known] - theirs[:, cols.to(theirs.device)].float().cpu().numpy())
            worst = max(worst, float(diff.max()))
    return worst


def ranks_of(scores: np.ndarray, items: list[str], stage: dict) -> list[int]:
    """1-based rank of each user's target: 1 + the other items, not in ``seen``, scored >= the target (textcl's
    pessimistic rule; NaN counts as -inf)."""
    index = {item: j for j, item in enumerate(items)}
    scores = np.nan_to_num(scores, nan=-np.inf, posinf=np.inf, neginf=-np.inf)
    ranks = []
    for u, (target, seen) in enumerate(zip(stage["targets"], stage["seen"])):
        t = index[target]
        above = scores[u] >= scores[u, t]
        above[[index[i] for i in seen]] = False
        above[t] = False  # the target is never above itself, nor excluded
        ranks.append(1 + int(above.sum()))
    return ranks


def main(argv=None) -> None:
    args = parse_args(argv)
    split_file = Path(args.split).resolve() / "split.json"
    out_path = Path(args.out).resolve()
    work = Path(args.work).resolve() if args.work else out_path.with_name(out_path.stem + "-work")
    data = json.loads(split_file.read_text())
    sequential = args.model in SEQUENTIAL
    if args.threads:
        torch.set_num_threads(args.threads)

    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    fresh_dir(work)
    os.chdir(work)  # RecBole's ./log, ./log_tensorboard and ./saved (checkpoints) land here
    settings = {
        "data_path": str(work),
        "benchmark_filename": ["train", *STAGES],
        "load_col": {"inter": [UID, IID, TIME] + ([ITEM_LIST] if sequential else [])},
        # eval_args is left at the model type's default, which already ranks in full (mode: full; checked
        # below): overriding it replaces the whole dict, and SequentialDataset insists on its default order TO.
        # Its split / group_by are not used with benchmark files.
        "metrics": ["Recall", "MRR", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "seed": args.seed,
    }
    if sequential:
        settings["train_neg_sample_args"] = None  # loss_type CE (the default): RecBole 1.2.1 raises without
        # without this alias RecBole remaps item_id_list into its OWN vocabulary, apart from item_id's: a
        # history would index the item embeddings with other items' ids
        settings["alias_of_item_id"] = [ITEM_LIST]
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    config = Config(model=args.model, dataset=DATASET, config_dict=json.loads(json.dumps(settings)))
    for key, want in (("USER_ID_FIELD", UID), ("ITEM_ID_FIELD", IID), ("TIME_FIELD", TIME)):
        assert config[key] == want, (key, config[key])
    if sequential:
        assert config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"] == ITEM_LIST
    assert config["eval_args"]["mode"] == {"valid": "full", "test": "full"}, config["eval_args"]
    max_len = int(config["MAX_ITEM_LIST_LENGTH"])
    (work / DATASET).mkdir()
    write_atomic(work / DATASET, data, sequential, max_len)

    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    epoch_train_s, epoch_valid_s = [], []

    def timed(fn, sink):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sink.append(time.perf_counter() - t0)
        return wrapper

    trainer._train_epoch = timed(trainer._train_epoch, epoch_train_s)
    trainer._valid_epoch = timed(trainer._valid_epoch, epoch_valid_s)
    t0 = time.perf_counter()
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    train_s = time.perf_counter() - t0

    # the best checkpoint; weights_only=False: it holds RecBole's Config (this run's own file), which torch >= 2.6
    # refuses to unpickle by default (RecBole's Trainer.evaluate(load_best_model=True) fails on it)
    checkpoint = torch.load(trainer.saved_model_file, map_location=config["device"], weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)

    items = data["items"]
    iid_map = dataset.field2token_id[IID]
    if sequential:
        assert dataset.field2token_id[ITEM_LIST] is iid_map, "item_id_list is not remapped with item_id"
    trained = {i for seq in data["train"].values() for i in seq}
    # an item with no training interaction (never in the training file), or not in RecBole's vocabulary at all,
    # gets the LOWEST score (-inf): it ranks below every trained item
    cat_ids = torch.tensor([iid_map[i] if (i in iid_map and i in trained) else -1 for i in items], dtype=torch.long)
    stages, score_info = {}, {}
    for stage, s in data["stages"].items():
        scores, score_info[stage] = catalogue_scores(model, dataset, data, stage, cat_ids, sequential, max_len,
                                                     config["device"], args.batch_users)
        stages[stage] = {"users": s["users"], "ranks": ranks_of(scores, items, s)}
        if stage == "test":
            check = same_as_recbole(model, test_data, dataset, s, scores, cat_ids, config["device"])


    defaults = {k: config[k] for k in ("epochs", "stopping_step", "eval_step", "train_batch_size", "learner",
                                         "learning_rate", "weight_decay", "train_neg_sample_args", "eval_args",
                                         "eval_batch_size", "repeatable", "reproducibility")}
    defaults.update({k: config[k] for k in ("embedding_size", "hidden_size", "n_layers", "n_heads", "inner_size",
                                              "hidden_dropout_prob", "attn_dropout_prob", "num_layers",
                                              "dropout_prob", "loss_type", "MAX_ITEM_LIST_LENGTH")
                     if config[k] is not None})
    result = {
        "model": args.model,
        "stages": stages,
        "train_s": train_s,
        "epochs_run": len(epoch_train_s),
        "best_epoch": int(checkpoint["epoch"]),
        "best_valid_score": float(best_valid_score),
        "epoch_train_s": epoch_train_s,
        "epoch_valid_s": epoch_valid_s,
        "recbole_version": recbole.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "device": str(config["device"]),
        "torch_threads": torch.get_num_threads(),
        "config": settings,
        "defaults": json.loads(json.dumps(defaults, default=str)),
        "recbole_valid": {k: float(v) for k, v in best_valid_result.items()},
        "recbole_test": {k: float(v) for k, v in test_result.items()},
        "items": {"catalogue": len(items), "trained": int((cat_ids >= 0).sum()), "in_vocab": dataset.item_num - 1},
        "users_in_vocab": dataset.user_num - 1,
        "scoring": score_info,
        "check_test_scores_max_abs_diff": check,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out_path)
    print(f"wrote {out_path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
