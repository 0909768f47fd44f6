"""The sequence user tower (data.interactions.user_tower: sequence): the loss by hand, the training windows,
cold items through their text alone, resumed = uninterrupted, a diverged loss, and settings it cannot honour."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from test_recommend_train import _write_log
from textcl.config import config_from_dict
from textcl.errors import ConfigError
from textcl.losses.next_item import sequence_softmax
from textcl.recommend.sequence import SequenceRecommender, SequenceShape, training_windows
from textcl.train import TrainingDiverged, train


def _config(model_dir, log, catalogue, *, epochs=3, **sections):
    base = {"model": {"name": str(model_dir), "max_seq_len": 32},
            "data": {"kind": "interactions", "path": str(log),
                     "interactions": {"items": str(catalogue), "template": "{title} ({year}). {genre}", "history": 4,
                                      "cold_fraction": 0.2, "user_tower": "sequence",
                                      "sequence": {"dim": 8, "hidden": 8, "dropout": 0.1}}},
            "loss": {"name": "infonce", "temperature": 0.1},
            "eval": {"batch_size": 8},
            "train": {"batch_size": 4, "epochs": epochs, "threads": 1, "seed": 3, "report_to": "none", "plot": False},
            "optim": {"lr": 1e-2}}
    for key, value in sections.items():
        base.setdefault(key, {}).update(value)
    return config_from_dict(base)


def test_the_sequence_softmax_by_hand():
    users = torch.tensor([[[1.0, 0.0], [0.0, 3.0]], [[1.0, 1.0], [2.0, 0.0]]])
    items = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    targets = torch.tensor([[-1, 1], [0, 2]])
    candidates = torch.tensor([True, True, True, False])  # item 3 never a candidate
    got = sequence_softmax(users, items, targets, candidates, temperature=0.5)
    r = 2 ** -0.5
    cos = {(0, 1): [0.0, 1.0, r], (1, 0): [r, r, 1.0], (1, 1): [1.0, 0.0, r]}  # cosine to items 0, 1, 2
    want = [-(torch.tensor(c) / 0.5).log_softmax(0)[t] for (b, p), c, t in
            zip(cos, cos.values(), [1, 0, 2])]
    assert float(got) == pytest.approx(float(sum(want) / 3), abs=1e-6)
    with pytest.raises(ValueError, match="every target must be a candidate"):
        sequence_softmax(users, items, torch.tensor([[-1, 3], [0, 2]]), candidates)
    assert float(sequence_softmax(users, items, torch.full((2, 2), -1), candidates)) == 0.0


def test_every_position_is_a_target_once_from_at_most_the_history_before_it():
    inputs, targets = training_windows([[1, 2, 3, 4, 5], [7, 8], [9]], 2)
    assert inputs.tolist() == [[3, 4], [1, 2], [-1, 7]]
    assert targets.tolist() == [[4, 5], [2, 3], [-1, 8]]


def test_a_cold_item_is_its_text_alone_and_never_a_candidate():
    text = F.normalize(torch.randn(5, 6), dim=-1)
    trained = torch.tensor([True, True, False, True, False])
    model = SequenceRecommender(SequenceShape(text_dim=6, dim=4, hidden=3, history=3), text, trained)
    v = model.item_vectors()
    torch.testing.assert_close(v[~trained], model.project(text[~trained]))
    torch.testing.assert_close(v[trained], model.project(text[trained]) + model.ids.weight[trained])
    loss = sequence_softmax(model.user_vectors(torch.tensor([[-1, 0, 1]])), v, torch.tensor([[-1, 1, 3]]), trained)
    loss.backward()
    assert model.ids.weight.grad[~trained].abs().sum() == 0


def test_a_run_trains_reports_and_saves_a_model_that_loads(tiny_bert_dir, tmp_path):
    from textcl.recommend.sequence import evaluate, load

    log, catalogue = _write_log(tmp_path, n_users=16)
    result = train(_config(tiny_bert_dir, log, catalogue), output_dir=tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(m["after"]) == {"views-valid", "views-test", "views-cold"} == set(m["before"])
    assert all(0.0 <= m["after"][s][k] <= 1.0 for s in m["after"] for k in ("ndcg@10", "recall@10", "mrr@10"))
    assert "ci95" in m["after"]["views-test"] and m["steps"] == 3 and 1 <= m["best_step"] <= 3
    model, meta = load(result.model_dir)
    from textcl.recommend.task import load_task

    task = load_task(_config(tiny_bert_dir, log, catalogue).data)
    assert meta["item_ids"] == task.item_ids
    assert evaluate(model, task, "test")["ndcg@10"] == m["after"]["views-test"]["ndcg@10"]
    # the catalogue for `textcl index build --input OUT/items.jsonl --model OUT/model`
    items = [json.loads(line) for line in (tmp_path / "run" / "items.jsonl").read_text().splitlines()]
    assert items == [{"id": i, "text": t} for i, t in zip(task.item_ids, task.item_texts)]
    assert m["selected_on"] == ["views-valid"] and m["time"]["total_s"] >= m["time"]["train_s"]


def test_a_resumed_run_equals_the_uninterrupted_one(tiny_bert_dir, tmp_path):
    log, catalogue = _write_log(tmp_path, n_users=16)
    whole = train(_config(tiny_bert_dir, log, catalogue), output_dir=tmp_path / "whole")
    cut = train(_config(tiny_bert_dir, log, catalogue), output_dir=tmp_path / "cut", stop_after_step=1)
    assert not cut.finished and not (tmp_path / "cut" / "metrics.json").exists()
    resumed = train(_config(tiny_bert_dir, log, catalogue), output_dir=tmp_path / "cut", resume=True)
    a = (whole.model_dir / "recommender.safetensors").read_bytes()
    assert a == (resumed.model_dir / "recommender.safetensors").read_bytes()
    assert whole.metrics["epochs"] == resumed.metrics["epochs"]
    with pytest.raises(Exception, match="other settings"):
        train(_config(tiny_bert_dir, log, catalogue, optim={"lr": 5e-3}), output_dir=tmp_path / "cut", resume=True)


def test_a_loss_that_is_not_finite_stops_and_keeps_the_last_good_checkpoint(tiny_bert_dir, tmp_path, monkeypatch):
    import textcl.losses.next_item as next_item

    log, catalogue = _write_log(tmp_path, n_users=16)
    real, calls = next_item.sequence_softmax, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) > 5 else loss  # the first epoch has 4 batches

    monkeypatch.setattr(next_item, "sequence_softmax", poisoned)
    with pytest.raises(TrainingDiverged, match=r"the loss became nan in epoch 2, batch 2; the last good "
                                               r"checkpoint is .*epoch-1.pt"):
        train(_config(tiny_bert_dir, log, catalogue), output_dir=tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "epoch-1.pt").exists()


@pytest.mark.parametrize("section, key, value, field", [
    ("train", "max_steps", 10, "train.max_steps"),
    ("optim", "warmup_ratio", 0.1, "optim.warmup_ratio"),
    ("train", "mixed_precision", "bf16", "train.mixed_precision"),
    ("eval", "select_best", False, "eval.select_best"),
    ("loss", "similarity", "dot", "loss.similarity"),
    ("data", "max_examples", 100, "data.max_examples"),
    ("train", "checkpoint_every", 0, "train.checkpoint_every"),
    ("optim", "fused", False, "optim.fused"),
    ("model", "fast_dropout", False, "model.fast_dropout"),
    ("train", "report_to", "wandb", "train.report_to"),
])
def test_settings_the_sequence_tower_never_reads_are_refused(tiny_bert_dir, tmp_path, section, key, value, field):
    log, catalogue = _write_log(tmp_path)
    with pytest.raises(ConfigError, match=rf"^{field}: is set \({value!r}\) but user_tower sequence (does not read|"
                                          r"reports to no tracker)"):
        _config(tiny_bert_dir, log, catalogue, **{section: {key: value}})


def test_sequence_settings_are_checked(tiny_bert_dir, tmp_path):
    log, catalogue = _write_log(tmp_path)
    c = _config(tiny_bert_dir, log, catalogue).to_dict()
    c["data"]["interactions"]["sequence"]["dropout"] = 1.0
    with pytest.raises(ConfigError, match=r"^data.interactions.sequence.dropout: expected a fraction in \[0, 1\)"):
        config_from_dict(c)
    c["data"]["interactions"].update(user_tower="text")
    c["data"]["interactions"]["sequence"]["dropout"] = 0.1
    with pytest.raises(ConfigError, match=r"^data.interactions.sequence: is set but only user_tower sequence"):
        config_from_dict(c)
    c["data"]["interactions"].update(user_tower="gru", sequence=None)
    with pytest.raises(ConfigError, match=r"^data.interactions.user_tower: expected text or sequence, got 'gru'"):
        config_from_dict(c)


def test_a_checkpoint_holding_pickled_code_is_refused_on_resume(tiny_bert_dir, tmp_path):
    """A resumed folder may come from someone else: its checkpoint is read as tensors and plain containers."""
    log, catalogue = _write_log(tmp_path, n_users=16)
    config = _config(tiny_bert_dir, log, catalogue)
    train(config, output_dir=tmp_path / "run", stop_after_step=1)
    path = tmp_path / "run" / "checkpoints" / "epoch-1.pt"
    saved = torch.load(path, weights_only=True)
    saved["state"]["history"].append(_Payload(tmp_path / "ran"))
    torch.save(saved, path)
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        train(config, output_dir=tmp_path / "run", resume=True)
    assert not (tmp_path / "ran").exists()


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_fresh_run_removes_what_an_earlier_run_left(tiny_bert_dir, tmp_path):
    log, catalogue = _write_log(tmp_path, n_users=16)
    out = tmp_path / "run"
    (out / "best-model").mkdir(parents=True)
    for name in ("items.jsonl", "log.csv", "metrics.json", "training.png"):
        (out / name).write_text("an earlier run")
    (out / "checkpoints" / "step-00000004").mkdir(parents=True)  # a text-tower run's checkpoint
    # --resume with no checkpoint of this tower to resume is a fresh start too
    train(_config(tiny_bert_dir, log, catalogue, epochs=2), output_dir=out, stop_after_step=1, resume=True)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch-1.pt"]


def test_tune_refuses_the_sequence_tower_by_name(tiny_bert_dir, tmp_path):
    from textcl.tune.tuner import check_dev_sets

    log, catalogue = _write_log(tmp_path)
    with pytest.raises(ConfigError, match=r"^data.interactions.user_tower: textcl tune prunes trials"):
        check_dev_sets(_config(tiny_bert_dir, log, catalogue))


def test_a_resume_past_train_epochs_is_refused(tiny_bert_dir, tmp_path):
    from textcl.train.checkpoint import ResumeMismatch

    log, catalogue = _write_log(tmp_path, n_users=16)
    train(_config(tiny_bert_dir, log, catalogue, epochs=3), output_dir=tmp_path / "run", stop_after_step=2)
    with pytest.raises(ResumeMismatch, match=r"already trained 2 epochs, more than train.epochs \(1\)"):
        train(_config(tiny_bert_dir, log, catalogue, epochs=1), output_dir=tmp_path / "run", resume=True)


def test_a_tune_trial_on_the_sequence_tower_is_a_config_error(tiny_bert_dir, tmp_path):
    """A search space may switch a trial to the sequence tower: the trial fails as a bad config, which the
    study records, rather than as a TypeError that stops the study."""
    log, catalogue = _write_log(tmp_path)
    with pytest.raises(ConfigError, match=r"^data.interactions.user_tower: sequence trains in epochs"):
        train(_config(tiny_bert_dir, log, catalogue), output_dir=tmp_path / "run", on_eval=lambda step, score: None)


def test_a_batch_of_one_window_is_allowed_and_a_negative_cold_seed_is_not(tiny_bert_dir, tmp_path):
    log, catalogue = _write_log(tmp_path)
    assert _config(tiny_bert_dir, log, catalogue, train={"batch_size": 1}).train.batch_size == 1
    with pytest.raises(ConfigError, match=r"^data.interactions.cold_seed: expected a whole number >= 0, got -1"):
        _config(tiny_bert_dir, log, catalogue, data={"interactions": {
            "items": str(catalogue), "template": "{title} ({year}). {genre}", "user_tower": "sequence",
            "cold_fraction": 0.2, "cold_seed": -1}})
