"""Training on an interaction log (data.kind interactions): the run's ranking figures are those of the saved
model re-ranked by hand, the split and names follow the protocol, and bad settings and files are refused."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from textcl.config import config_from_dict
from textcl.errors import ConfigError, TextclError
from textcl.models import Encoder
from textcl.train import train

ITEMS = {str(i): (title, year, genre) for i, (title, year, genre) in enumerate([
    ("the cat", 1990, "comedy"), ("a dog runs", 1991, "drama"), ("the mat", 1992, "comedy"),
    ("a man sat", 1993, "drama"), ("the woman ran", 1994, "comedy"), ("it was the dog", 1995, "drama"),
    ("slowly the cat ran", 1996, "comedy"), ("a quick man", 1997, "drama"), ("on the mat", 1998, "comedy"),
    ("the dog and the cat", 1999, "drama")], start=1)}


def _write_log(tmp_path, n_users: int = 12):
    catalogue = tmp_path / "films.item"
    catalogue.write_text("item_id:token\ttitle:token_seq\tyear:token\tgenre:token_seq\n"
                         + "".join(f"{i}\t{t}\t{y}\t{g}\n" for i, (t, y, g) in ITEMS.items()))
    log = tmp_path / "views.inter"
    rows = []
    for u in range(1, n_users + 1):  # each user walks the catalogue from their own start, one item a day
        for k in range(5):
            rows.append(f"{u}\t{(u + 2 * k) % 10 + 1}\t{4.0}\t{1000 * u + k}\n")
    log.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(rows))
    return log, catalogue


def _config(model_dir, log, catalogue, **interactions):
    return config_from_dict({
        "model": {"name": str(model_dir), "max_seq_len": 32},
        "data": {"kind": "interactions", "path": str(log),
                 "interactions": {"items": str(catalogue), "template": "{title} ({year}). {genre}", "history": 3,
                                  **interactions}},
        "loss": {"name": "infonce", "temperature": 0.1},
        "eval": {"every": 2, "before": True, "batch_size": 8},
        "train": {"batch_size": 8, "max_steps": 4, "checkpoint_every": 0, "log_every": 1, "report_to": "none",
                  "plot": False, "threads": 1, "seed": 3},
        "optim": {"lr": 1e-3}})


def _by_hand(model_dir, histories: list[str], targets: list[int], seen: list[set[int]], texts: list[str]) -> dict:
    """NDCG@10, Recall@10 and MRR@10 of a full ranking with numpy: every other item scoring at least the target's
    cosine ranks above it (ties count against the target), the user's seen items left out."""
    enc = Encoder.load(model_dir)
    items = np.asarray(enc.encode(texts, normalize=True), dtype=np.float64)
    users = np.asarray(enc.encode(histories, normalize=True), dtype=np.float64)
    ndcg = recall = mrr = 0.0
    for u, target in enumerate(targets):
        scores = items @ users[u]
        others = [j for j in range(len(texts)) if j != target and j not in seen[u]]
        rank = 1 + sum(scores[j] >= scores[target] - 1e-6 for j in others)
        if rank <= 10:
            ndcg += 1.0 / math.log2(rank + 1)
            recall += 1.0
            mrr += 1.0 / rank
    n = len(targets)
    return {"ndcg@10": ndcg / n, "recall@10": recall / n, "mrr@10": mrr / n}


def test_a_run_reports_the_saved_models_full_ranking(tiny_bert_dir, tmp_path):
    log, catalogue = _write_log(tmp_path)
    result = train(_config(tiny_bert_dir, log, catalogue), output_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"views-valid", "views-test"} <= set(metrics["before"]) and "views-cold" not in metrics["after"]
    for folder in ("model", "best-model"):  # both serve as they are: both say how a history becomes a text
        assert json.loads((tmp_path / "run" / folder / "textcl_recommend.json").read_text()) == {
            "history": 3, "separator": " | "}
    assert metrics["selected_on"] == ["views-valid"]
    texts = [f"{t} ({y}). {g}" for t, y, g in ITEMS.values()]
    sep = " | "
    for stage, cut in (("valid", 3), ("test", 4)):  # valid: history of 3 training items; test adds valid's item
        m = metrics["after"][f"views-{stage}"]
        assert m["n"] == 12 and m["metric"] == "NDCG@10 x100"
        assert all(0.0 <= m[k] <= 1.0 for k in ("ndcg@10", "recall@10", "mrr@10"))
        assert m["score"] == pytest.approx(100 * m["ndcg@10"])
        histories, targets, seen = [], [], []
        for u in range(1, 13):
            seq = [(u + 2 * k) % 10 for k in range(5)]  # item indices in time order
            before = seq[:cut]
            histories.append(sep.join(texts[i] for i in before[-3:][::-1]))
            targets.append(seq[cut])
            seen.append(set(before) - {seq[cut]})
        expected = _by_hand(result.model_dir, histories, targets, seen, texts)
        for key, value in expected.items():
            assert m[key] == pytest.approx(value, abs=1e-6), (stage, key)
        lo, hi = m["ci95_by_metric"]["ndcg@10"]
        assert lo <= m["ndcg@10"] <= hi
    settings = json.loads((result.model_dir / "textcl_recommend.json").read_text())
    assert settings == {"history": 3, "separator": " | "}
    catalogue = [json.loads(line) for line in (tmp_path / "run" / "items.jsonl").read_text().splitlines()]
    assert catalogue == [{"id": i, "text": t} for i, t in zip(ITEMS, texts)]


def test_cold_items_are_reported_and_never_trained_on(tiny_bert_dir, tmp_path):
    from textcl.recommend.task import load_task

    log, catalogue = _write_log(tmp_path, n_users=20)
    config = _config(tiny_bert_dir, log, catalogue, cold_fraction=0.2, cold_seed=1)
    task = load_task(config.data)
    # neither a row's item nor anything before it in the user's training sequence (its history) is cold
    assert task.cold_items and all(e.item not in task.cold_items
                                   and not set(task.train[e.user][:e.position]) & task.cold_items
                                   for e in task.examples())
    result = train(config, output_dir=tmp_path / "run")
    cold = result.metrics["after"]["views-cold"]
    assert cold["n"] == len(task.sets["cold"].histories) > 0
    assert all(task.item_ids[t] in task.cold_items for t in task.sets["cold"].targets)


def test_an_item_missing_from_the_catalogue_names_the_log_and_the_item(tiny_bert_dir, tmp_path):
    log, catalogue = _write_log(tmp_path)
    catalogue.write_text("\n".join(catalogue.read_text().splitlines()[:-1]) + "\n")  # drop item 10
    with pytest.raises(TextclError, match=r"views\.inter: item '10' .* is not in the catalogue .*films\.item"):
        train(_config(tiny_bert_dir, log, catalogue), output_dir=tmp_path / "run")


@pytest.mark.parametrize("change, field", [
    ({"data": {"interactions": {"items": None}}}, "data.interactions.items"),
    ({"data": {"interactions": {"history": 0}}}, "data.interactions.history"),
    ({"data": {"interactions": {"cold_fraction": 1.0}}}, "data.interactions.cold_fraction"),
    ({"loss": {"name": "cosent"}}, "loss.name"),
    ({"loss": {"symmetric": True}}, "loss.symmetric"),
    ({"model": {"two_tower": True}}, "model.two_tower"),
])
def test_settings_the_next_item_loss_cannot_honour_are_refused(tiny_bert_dir, tmp_path, change, field):
    log, catalogue = _write_log(tmp_path)
    base = _config(tiny_bert_dir, log, catalogue)
    raw = {"model": {"name": str(tiny_bert_dir)},
           "data": {"kind": "interactions", "path": str(log),
                    "interactions": {"items": str(catalogue), "template": "{title}"}}}
    for section, values in change.items():
        for key, value in values.items():
            if isinstance(value, dict):
                raw[section].setdefault(key, {}).update(value)
            else:
                raw.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict(raw)
    assert base.data.kind == "interactions"


class _TableEncoder:
    """Fixed vectors by text: an item's text maps to its row; any other text (a history) to ``user``."""

    def __init__(self, table: dict, user):
        self.table, self.user = table, np.asarray(user, dtype=np.float32)

    def encode(self, texts, batch_size=64, normalize=True):
        rows = [np.asarray(self.table.get(t, self.user), dtype=np.float32) for t in texts]
        return np.stack([r / np.linalg.norm(r) for r in rows])


def test_the_user_is_the_history_text_or_the_mean_of_its_items_by_hand():
    from textcl.recommend.task import InteractionTask

    texts = ["north", "east", "south", "west"]
    # one user: trained on north then east; valid: south; test: west
    task = InteractionTask("t", ["1", "2", "3", "4"], texts, {"u": ["1", "2"]}, {"u": "3"}, {"u": "4"}, history=2,
                           separator=" | ")
    enc = _TableEncoder({"north": [0, 1], "east": [1, 0], "south": [0, -1], "west": [-1, 0.1]}, user=[-1, 0])
    # test history: north, east, south; the last 2 are east and south, text "south | east"
    assert task.sets["test"].histories == ["south | east"]
    # text user (-1, 0): west (cos ~0.995) ranks first -> NDCG 1
    assert task.evaluate(enc, "test")["ndcg@10"] == pytest.approx(1.0)
    # mean user: (east + south) / 2 = (0.5, -0.5); with north, east, south seen, west is the only item left: rank 1
    assert task.evaluate(enc, "test", user="mean")["ndcg@10"] == pytest.approx(1.0)
    # valid (target south, history north, east): text user (-1, 0) ranks west (unseen) above south: rank 2
    assert task.evaluate(enc, "valid")["ndcg@10"] == pytest.approx(1 / math.log2(3))
    # mean user (0.5, 0.5): south cos -0.707 against west cos (-1 + 0.1) / (1.414 * 1.005) = -0.633: rank 2
    assert task.evaluate(enc, "valid", user="mean")["mrr@10"] == pytest.approx(0.5)
    enc_west_low = _TableEncoder({"north": [0, 1], "east": [1, 0], "south": [0, -1], "west": [-1, -1.5]}, [-1, 0])
    # west (-0.55, -0.83): cos to (0.707, 0.707) = -0.98 < south's -0.707: south ranks first for the mean user
    assert task.evaluate(enc_west_low, "valid", user="mean")["mrr@10"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="user: expected 'text' or 'mean'"):
        task.evaluate(enc, "valid", user="last")


# ------------------------------------------------------------------------------------------------ hostile inputs
def _task(train, valid, test, history=1, **kw):
    from textcl.recommend.task import InteractionTask

    ids = sorted({i for s in train.values() for i in s} | set(valid.values()) | set(test.values())
                 | set(kw.get("cold_test", {}).values()) | set(kw.get("cold_items", ())))
    return InteractionTask("t", ids, [f"item {i}" for i in ids], train, valid, test, history=history,
                           separator=" | ", **kw)


def test_the_hit_mask_covers_the_whole_history_not_only_its_text():
    from types import SimpleNamespace

    import torch

    from textcl.losses.next_item import accidental_hits
    from textcl.recommend.task import rows_logq
    from textcl.train.batcher import Batcher

    # history text of 1 item; u picked a, b, c, d: the row for d has the text "c" but a and b are picked too
    task = _task({"u": ["a", "b", "c", "d"], "v": ["x", "a"], "w": ["y", "b"]}, {"u": "e"}, {"u": "f"})
    rows = {(e.user, e.item): e for e in task.examples()}
    batch = [rows[("u", "d")], rows[("v", "a")], rows[("w", "b")]]
    run = SimpleNamespace(acc=SimpleNamespace(device=torch.device("cpu")), task=task, item_logq=rows_logq(batch),
                          catalogue=None)
    keys = Batcher(run).item_keys(batch)
    hits = accidental_hits(keys["positive_keys"], keys["history_keys"])
    # u's row must not take a or b (both picked before d) as negatives; v's and w's rows have no such hit
    assert hits.tolist() == [[False, True, True], [False, False, False], [False, False, False]]


def test_logq_is_the_share_of_the_training_rows_positives():
    from textcl.recommend.task import rows_logq

    # positives (each user's items after the first): b, c (u) and b (v): b 2/3, c 1/3; a is never a row's item
    task = _task({"u": ["a", "b", "c"], "v": ["a", "b"]}, {"u": "c", "v": "c"}, {"u": "a", "v": "a"})
    rows = task.examples()
    assert rows_logq(rows) == pytest.approx({"b": math.log(2 / 3), "c": math.log(1 / 3)})
    # a sample of the rows (data.max_examples) is what the batches draw from: its own shares
    assert rows_logq([r for r in rows if r.user == "u"]) == pytest.approx({"b": math.log(0.5), "c": math.log(0.5)})


def test_rankings_leave_out_cold_items_the_user_picked(tmp_path, monkeypatch):
    import textcl.recommend.split as split_mod
    from textcl.data.interactions import Interaction
    from textcl.recommend.split import cold_split, leave_one_out

    # u picked k (cold) early; the ranking must leave k out although the history text cannot show it
    log = [Interaction("u", i, t, None, t) for t, i in enumerate(["k", "a", "b", "c", "d"])]
    log += [Interaction("v", i, t, None, 10 + t) for t, i in enumerate(["a", "k", "b", "c", "z"])]
    monkeypatch.setattr(split_mod, "choose_cold_items", lambda items, fraction, seed: {"k", "z"})
    split, cold, cold_test, cold_hist = cold_split(log)
    task = _task(split.train, split.valid, split.test, cold_items=cold, cold_test=cold_test,
                 cold_histories=cold_hist, full=leave_one_out(log))
    k = task.index["k"]
    for stage in ("valid", "test"):
        s = task.sets[stage]
        assert k in s.seen[s.users.index("u")], stage
    assert task.sets["cold"].users == ["v"] and k in task.sets["cold"].seen[0]


def test_a_log_with_nothing_to_rank_is_refused_before_training():
    from textcl.errors import TextclError

    with pytest.raises(TextclError, match="t: no user has a validation item to rank"):
        _task({"u": ["a", "b"], "v": ["c", "d"]}, {}, {})


def test_eval_null_keeps_the_recommendation_defaults(tiny_bert_dir, tmp_path):
    log, catalogue = _write_log(tmp_path)
    raw = {"model": {"name": str(tiny_bert_dir)}, "eval": None,
           "data": {"kind": "interactions", "path": str(log),
                    "interactions": {"items": str(catalogue), "template": "{title}"}}}
    config = config_from_dict(raw)
    assert config.eval.data == [] and config.eval.test == []
    with pytest.raises(ConfigError, match="eval: expected a mapping of EvalConfig fields, got bool"):
        config_from_dict({**raw, "eval": False})


@pytest.mark.parametrize("section, key, value", [
    ("data", "group_field", "genre"), ("data", "anchor_field", "a"), ("data", "positive_field", "p"),
    ("loss", "mask_false_negatives", False)])
def test_fields_an_interaction_log_never_reads_are_refused(tiny_bert_dir, tmp_path, section, key, value):
    log, catalogue = _write_log(tmp_path)
    raw = {"model": {"name": str(tiny_bert_dir)},
           "data": {"kind": "interactions", "path": str(log),
                    "interactions": {"items": str(catalogue), "template": "{title}"}}}
    raw.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: is set .* remove it"):
        config_from_dict(raw)


def test_a_resume_with_other_history_texts_is_refused(tiny_bert_dir, tmp_path):
    from textcl.train.checkpoint import ResumeMismatch

    log, catalogue = _write_log(tmp_path)
    config = _config(tiny_bert_dir, log, catalogue)
    config.train.checkpoint_every = 1
    config.eval.before = False
    train(config, output_dir=tmp_path / "run", stop_after_step=2)
    other = _config(tiny_bert_dir, log, catalogue, history=2)  # same rows, other texts
    other.train.checkpoint_every, other.eval.before = 1, False
    with pytest.raises(ResumeMismatch, match=r"data\.interactions: checkpoint .*'history': 3.*'history': 2"):
        train(other, output_dir=tmp_path / "run", resume=True)


def test_a_saved_model_folder_is_never_without_its_settings(tiny_bert_dir, tmp_path, monkeypatch):
    """model/ and best-model/ get textcl_recommend.json inside the save's atomic rename: the moment a save
    returns (or a server loads the folder), the settings are there."""
    from textcl.models import Encoder

    real, saved = Encoder.save, []

    def checked_save(self, path, **kw):
        out = real(self, path, **kw)
        saved.append(path.name)
        assert (path / "textcl_recommend.json").is_file(), f"{path} was in place without its settings"
        return out

    monkeypatch.setattr(Encoder, "save", checked_save)
    log, catalogue = _write_log(tmp_path)
    train(_config(tiny_bert_dir, log, catalogue), output_dir=tmp_path / "run")
    assert {"model", "best-model"} <= set(saved)


def test_repeated_rows_are_counted_once_and_reported(tiny_bert_dir, tmp_path, capsys):
    log, catalogue = _write_log(tmp_path)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines + lines[1:4]))  # three rows again
    train(_config(tiny_bert_dir, log, catalogue), output_dir=tmp_path / "run")
    assert "3 rows repeat an earlier row's user, item and timestamp; each such interaction is counted once" in (
        capsys.readouterr().out)


def test_a_fresh_run_removes_an_earlier_runs_catalogue(tiny_bert_dir, tmp_path):
    """items.jsonl is written after model/: a run stopped before its end must not leave an earlier run's
    catalogue (another template) beside whatever model folder is there."""
    log, catalogue = _write_log(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / "items.jsonl").write_text('{"id": "1", "text": "an earlier template"}\n')
    config = _config(tiny_bert_dir, log, catalogue)
    config.eval.before = False
    train(config, output_dir=out, stop_after_step=1)
    assert not (out / "items.jsonl").exists()


# ------------------------------------------------------------------ negatives: catalogue
def test_the_catalogue_mask_holds_every_item_picked_before_the_row():
    from types import SimpleNamespace

    import torch

    from textcl.recommend.catalogue import CatalogueCache
    from textcl.train.batcher import Batcher

    task = _task({"u": ["a", "b", "c", "d"], "v": ["x", "a"]}, {"u": "e"}, {"u": "f"})
    rows = {(e.user, e.item): e for e in task.examples()}
    cache = CatalogueCache(task.item_ids, task.item_texts, 2, every=5)
    run = SimpleNamespace(acc=SimpleNamespace(device=torch.device("cpu")), task=task, catalogue=cache,
                          item_logq={"b": -1.0, "c": -1.0, "d": -1.0, "a": -1.0})
    keys = Batcher(run).item_keys([rows[("u", "c")], rows[("v", "a")]])
    assert {"positive_keys", "history_keys", "positive_logq"} <= set(keys)  # the in-batch softmax's keys too
    col = cache.column
    assert keys["positive_columns"].tolist() == [col["c"], col["a"]]
    expected = torch.zeros(2, len(task.item_ids), dtype=torch.bool)
    expected[0, [col["a"], col["b"]]] = True  # u picked a and b before c (d comes after: not masked)
    expected[1, col["x"]] = True
    assert torch.equal(keys["catalogue_mask"], expected)
    assert keys["catalogue"] is cache.embeddings


def test_the_catalogue_is_refreshed_on_its_schedule():
    from textcl.recommend.catalogue import CatalogueCache

    cache = CatalogueCache(["a", "b"], ["item a", "item b"], 2, every=3)
    assert cache.due(0) and cache.due(7)  # never refreshed
    cache.refreshed_at.fill_(3)
    assert [s for s in range(3, 10) if cache.due(s)] == [6, 7, 8, 9]
    with pytest.raises(ValueError, match=r"item 'z' is not in the training catalogue"):
        cache.columns(["a", "z"])
    with pytest.raises(ValueError, match=r"every: expected a positive number of steps, got 0"):
        CatalogueCache(["a"], ["item a"], 2, every=0)


def test_a_resumed_catalogue_run_equals_the_uninterrupted_one(tiny_bert_dir, tmp_path):
    """The cached catalogue is in the checkpoint: refreshed at steps 0 and 3, a run stopped after step 2 resumes
    on the step-0 vectors, as the uninterrupted run does (re-embedding at the resume would not)."""
    import torch

    log, catalogue = _write_log(tmp_path, n_users=20)

    def config():
        c = _config(tiny_bert_dir, log, catalogue, negatives="catalogue", catalogue_refresh=3, cold_fraction=0.2,
                    cold_seed=1)
        c.train.checkpoint_every, c.eval.before, c.eval.every = 2, False, 4
        return c

    c = config()
    train(c, output_dir=tmp_path / "run", stop_after_step=2)
    resumed = train(config(), output_dir=tmp_path / "run", resume=True)
    straight = train(config(), output_dir=tmp_path / "straight")
    a, b = Encoder.load(resumed.model_dir), Encoder.load(straight.model_dir)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert resumed.metrics["after"]["views-valid"]["ndcg@10"] == straight.metrics["after"]["views-valid"]["ndcg@10"]


def test_the_training_catalogue_leaves_out_cold_items(tiny_bert_dir, tmp_path):
    from textcl.recommend.task import load_task
    from textcl.train.build import build

    log, catalogue = _write_log(tmp_path, n_users=20)
    c = _config(tiny_bert_dir, log, catalogue, negatives="catalogue", cold_fraction=0.2, cold_seed=1)
    task = load_task(c.data)
    run = build(c, tmp_path / "run")
    assert run.catalogue.item_ids == [i for i in task.item_ids if i not in task.cold_items] != task.item_ids


def test_the_cache_holds_the_vectors_training_gives_the_items(tiny_bert_dir, tmp_path):
    """Cut at model.max_seq_len like a batch's items, in eval mode: the cache is what a fresh forward would give."""
    import torch

    from textcl.train.build import build

    log, catalogue = _write_log(tmp_path)
    c = _config(tiny_bert_dir, log, catalogue, negatives="catalogue")
    c.model.max_seq_len = 4  # shorter than the item texts
    run = build(c, tmp_path / "run")
    cache, encoder = run.catalogue, run.encoder
    cache.refresh(encoder, 0, max_length=4, batch_size=3)
    assert encoder.training  # the mode training had is kept
    encoder.eval()
    with torch.no_grad():
        fresh = encoder(encoder.tokenize(cache.texts, max_length=4))
    assert torch.allclose(cache.embeddings, fresh, atol=1e-5)
    assert int(cache.refreshed_at) == 0


def test_a_checkpoint_from_before_the_catalogue_softmax_still_resumes(tiny_bert_dir, tmp_path):
    """In-batch runs record data.interactions as they did before negatives and catalogue_refresh existed."""
    from textcl.train.trainer import _interactions_layout

    log, catalogue = _write_log(tmp_path)
    layout = _interactions_layout(_config(tiny_bert_dir, log, catalogue))
    assert "negatives" not in layout and "catalogue_refresh" not in layout and layout["logq_correction"] is True
    # nor user_tower and sequence, which came later (the text tower is the only one this trainer runs)
    assert set(layout) == {"items", "template", "history", "separator", "cold_fraction", "cold_seed",
                           "logq_correction", "mask_hits", "name"}
    on = _interactions_layout(_config(tiny_bert_dir, log, catalogue, negatives="catalogue", catalogue_refresh=7))
    assert on["negatives"] == "catalogue" and on["catalogue_refresh"] == 7


def test_the_recipe_switches_to_the_catalogue_with_one_setting():
    from pathlib import Path

    from textcl.config import load_config, set_field

    recipe = Path(__file__).resolve().parent.parent / "recipes" / "recommend-ml100k.yaml"
    d = load_config(recipe).to_dict()
    set_field(d, "data.interactions.negatives", "catalogue")
    assert config_from_dict(d).data.interactions.negatives == "catalogue"


@pytest.mark.parametrize("interactions, message", [
    ({"catalogue_refresh": 7}, r"data\.interactions\.catalogue_refresh: is set \(7\) but only negatives catalogue"),
    ({"negatives": "queue"}, r"data\.interactions\.negatives: expected batch or catalogue, got 'queue'"),
    ({"negatives": "catalogue", "catalogue_refresh": 0},
     r"data\.interactions\.catalogue_refresh: expected a positive number, got 0"),
])
def test_catalogue_settings_are_checked(tiny_bert_dir, tmp_path, interactions, message):
    log, catalogue = _write_log(tmp_path)
    with pytest.raises(ConfigError, match=message):
        _config(tiny_bert_dir, log, catalogue, **interactions)


def test_the_catalogue_refuses_the_simcse_head(tiny_bert_dir, tmp_path):
    log, catalogue = _write_log(tmp_path)
    c = _config(tiny_bert_dir, log, catalogue, negatives="catalogue").to_dict()
    c["model"]["mlp_head"] = True
    with pytest.raises(ConfigError, match=r"model\.mlp_head: the SimCSE head runs in training only"):
        config_from_dict(c)
