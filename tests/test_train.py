"""The trainer: resumed equals uninterrupted, cached equals plain, NaN stops, and what a run writes."""
import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from textcl.config import config_from_dict
from textcl.train import TrainingDiverged, train

SENTENCES = [
    "the cat sat on the mat", "a dog ran in the park", "the sun is bright today", "she reads a long book",
    "rain fell on the quiet town", "he plays the piano at night", "birds sing in the early morning",
    "the train left the station late", "children laugh in the garden", "a ship sails across the sea",
    "the old man walks slowly", "snow covers the high mountains", "we cook dinner together",
    "the river flows to the ocean", "a small boat drifts away", "music fills the crowded hall",
] * 2


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(f"{s} {i}" for i, s in enumerate(SENTENCES)) + "\n")
    return path


@pytest.fixture()
def sts_file(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("the cat sat\na cat was sitting\t4.5\n".replace("\n", "\t", 1)
                    + "a dog ran\tthe sun is bright\t0.5\nbirds sing\tbirds are singing\t4.8\nrain fell\ta ship sails\t1.0\n")
    return path


def make_config(model_dir, data_path, **sections):
    base = {
        "model": {"name": str(model_dir), "max_seq_len": 16},
        "data": {"path": str(data_path)},
        "eval": {"data": [], "test": [], "every": 0, "before": False},
        "train": {"batch_size": 4, "max_steps": 6, "checkpoint_every": 3, "log_every": 1, "report_to": "none",
                  "plot": False},
        "optim": {"lr": 1e-3},
    }
    for key, value in sections.items():
        base.setdefault(key, {}).update(value)
    return config_from_dict(base)


def weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def assert_same_weights(a, b, atol=0.0):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0)


AUGMENT = {"compose": [{"span_crop": {"min_ratio": 0.5, "max_ratio": 0.9}}, {"word_deletion": {"rate": 0.2}}]}


@pytest.mark.parametrize("variant", ["dropout", "augmented", "moco", "ema", "mix", "mix_distill", "l2_start"])
def test_resumed_run_equals_uninterrupted(tiny_bert_dir, corpus, tmp_path, variant, monkeypatch):
    extra = {"dropout": {}, "augmented": {"data": {"augment": AUGMENT}},
             # MoCo with 2 micro-batches per step: one EMA update per step, both micro-batches' keys queued;
             # 6 steps x 2 x 4 examples cross the 32-example epoch boundary
             "moco": {"loss": {"moco": {"momentum": 0.9, "queue_size": 8}}, "train": {"grad_accum": 2, "epochs": 2}},
             # the weight average is saved with the checkpoint and continued: the saved model is the average
             "ema": {"optim": {"ema_decay": 0.9}},
             # the general-domain texts of a step come from (seed, step): a resumed run draws the same ones
             "mix": {"data": {"mix": {"path": str(corpus), "batch_size": 4, "weight": 0.5}}},
             # distil towards the loaded model's vectors, not the checkpoint's
             "mix_distill": {"data": {"mix": {"path": str(corpus), "batch_size": 4, "weight": 5.0,
                                              "objective": "distill"}}},
             # the pull goes to the loaded model's weights, not to the checkpoint's
             "l2_start": {"optim": {"l2_start": 20.0}}}[variant]
    config = make_config(tiny_bert_dir, corpus, **extra)
    straight = train(config, output_dir=tmp_path / "straight")
    assert straight.finished and straight.steps == 6
    first = train(config, output_dir=tmp_path / "split", stop_after_step=3)
    assert not first.finished and first.steps == 3
    assert not (tmp_path / "split" / "model").exists()
    import textcl.train.trainer as trainer

    steps_run = []
    real_step = trainer.train_step
    monkeypatch.setattr(trainer, "train_step", lambda run, mb, step: steps_run.append(step) or real_step(run, mb, step))
    resumed = train(config, output_dir=tmp_path / "split", resume=True)
    assert resumed.finished and resumed.steps == 6
    assert steps_run == [3, 4, 5]  # it continued after step 3, not from the start
    assert_same_weights(tmp_path / "straight", tmp_path / "split")


def test_cached_training_equals_plain(tiny_bert_dir, corpus, tmp_path):
    # The plain step runs anchors and positives in one forward, GradCache in chunks, so their dropout masks
    # differ by construction; with dropout off the two trainer paths must agree. (tests/test_gradcache.py
    # checks the dropout replay itself.)
    common = {"model": {"dropout": 0.0}, "train": {"max_steps": 2, "batch_size": 8}}
    plain = make_config(tiny_bert_dir, corpus, **common)
    cached = make_config(tiny_bert_dir, corpus, **common, loss={"cached": True, "mini_batch_size": 3})
    train(plain, output_dir=tmp_path / "plain")
    train(cached, output_dir=tmp_path / "cached")
    assert_same_weights(tmp_path / "plain", tmp_path / "cached", atol=1e-5)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_bert_dir, corpus, tmp_path, monkeypatch):
    from textcl.losses import InfoNCE

    real = InfoNCE.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        loss = real(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(InfoNCE, "forward", poisoned)
    config = make_config(tiny_bert_dir, corpus, train={"checkpoint_every": 2})
    with pytest.raises(TrainingDiverged, match=r"the loss is nan at step 3.*step-00000002") as err:
        train(config, output_dir=tmp_path / "run")
    assert "before the optimizer step" in str(err.value)
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert json.loads((ckpt / "textcl_state.json").read_text())["step"] == 2
    assert not (tmp_path / "run" / "checkpoints" / "step-00000003").exists()
    monkeypatch.setattr(InfoNCE, "forward", real)
    resumed = train(config, output_dir=tmp_path / "run", resume=True)  # the kept checkpoint resumes
    assert resumed.finished and resumed.steps == 6


def test_run_outputs_and_sentence_transformers_load(tiny_bert_dir, corpus, sts_file, tmp_path):
    from sentence_transformers import SentenceTransformer

    from textcl.models import Encoder

    config = make_config(tiny_bert_dir, corpus, eval={"data": [str(sts_file)], "test": [str(sts_file)], "every": 2,
                                                      "before": True}, train={"plot": True})
    result = train(config, output_dir=tmp_path / "run")
    out = tmp_path / "run"
    for name in ("model/modules.json", "model/README.md", "metrics.json", "log.csv", "training.png", "config.json"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["before"]) == set(metrics["after"]) == {"dev"}
    assert metrics["best_step"] in (2, 4, 6)
    card = (out / "model" / "README.md").read_text()
    assert "| dev | Spearman x100 (cosine) |" in card and "gao2021simcse" in card and "max_seq_len: 16" in card
    assert "Best step on dev:" in card and "truncated to 16 tokens; this model encodes up to\n128 tokens" in card
    saved = json.loads((out / "model" / "sentence_bert_config.json").read_text())
    assert saved["max_seq_length"] == 128  # training truncation (16) is not the model's limit
    # save_max_seq_len auto: the dev set scored at both lengths; a tie (random tiny model) keeps the model's own
    auto = metrics["max_seq_len"]["auto"]
    assert (metrics["max_seq_len"]["train"], metrics["max_seq_len"]["saved"]) == (16, 128)
    assert (auto["train"]["length"], auto["base"]["length"], auto["chosen"]) == (16, 128, 128)
    assert auto["base"]["score"] >= auto["train"]["score"] and metrics["selected_on"] == ["dev"]
    assert metrics["time"]["eval_s"] > 0 and 0 < metrics["time"]["eval_share"] < 1
    assert metrics["versions"]["torch"] == torch.__version__ and metrics["versions"]["textcl"]
    texts = ["the cat sat on the mat", "music fills the hall"]
    ours = Encoder.load(out / "model").encode(texts)
    theirs = SentenceTransformer(str(out / "model"), device="cpu").encode(texts)
    assert np.abs(ours - theirs).max() <= 1e-5
    log = (out / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch,loss,lr") and len(log) > 6
    assert result.metrics["after"]["dev"]["n"] == 4


@pytest.mark.parametrize("kind, rows, extra", [
    ("pairs", [{"anchor": f"q {i}", "positive": f"the answer {i}"} for i in range(12)], {}),
    ("triples", [{"anchor": f"q {i}", "positive": f"yes {i}", "negative": f"no {i}"} for i in range(12)],
     {"loss": {"hard_negative_weight": 1.0}}),
    ("pairs", [{"anchor": f"q {i}", "positive": f"the answer {i}"} for i in range(12)],
     {"model": {"two_tower": True}, "loss": {"symmetric": True}}),
])
def test_pairs_triples_and_two_towers_train(tiny_bert_dir, tmp_path, kind, rows, extra):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = make_config(tiny_bert_dir, data, data={"kind": kind}, train={"max_steps": 2}, **extra)
    result = train(config, output_dir=tmp_path / "run")
    assert result.finished
    assert (tmp_path / "run" / "model-document").exists() == bool(extra.get("model", {}).get("two_tower"))


def test_bf16_autocast_trains_on_cpu(tiny_bert_dir, corpus, tmp_path):
    config = make_config(tiny_bert_dir, corpus, train={"max_steps": 2, "mixed_precision": "bf16"})
    assert train(config, output_dir=tmp_path / "run").finished


def test_too_little_data_is_explained(tiny_bert_dir, corpus, tmp_path):
    config = make_config(tiny_bert_dir, corpus, train={"batch_size": 64})
    with pytest.raises(Exception, match="make no full optimizer step of batch_size 64"):
        train(config, output_dir=tmp_path / "run")


def snapshot(encoder) -> dict:
    return {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}


def assert_weights_equal(saved_dir, expected: dict):
    saved = load_file(str(saved_dir / "model.safetensors"))
    assert saved.keys() == expected.keys()
    for k in saved:
        torch.testing.assert_close(saved[k], expected[k], atol=0.0, rtol=0)


def scripted_evaluator(scores, snapshots):
    """An evaluator that answers ``scores`` in turn and keeps the weights it was shown (runs using it set
    ``model.save_max_seq_len: false``, so the final length choice asks nothing more)."""
    scores = iter(scores)

    def evaluator(encoder):
        snapshots.append(snapshot(encoder))
        return {"my-metric": next(scores)}
    return evaluator


def test_custom_evaluator_selects_the_best_step_and_saves_its_weights(tiny_bert_dir, corpus, tmp_path):
    seen = []
    evaluator = scripted_evaluator([1.0, 5.0, 3.0, 5.0], seen)  # steps 2, 4, 6, then the final model
    config = make_config(tiny_bert_dir, corpus, model={"save_max_seq_len": False},
                         eval={"every": 2})
    result = train(config, output_dir=tmp_path / "run", evaluators=[evaluator])
    assert result.metrics["best_step"] == 4
    assert result.metrics["after"]["my-metric"] == {"score": 5.0}
    assert len(seen) == 4
    assert_weights_equal(tmp_path / "run" / "model", seen[1])  # step 4's weights, not the last step's
    assert_weights_equal(tmp_path / "run" / "model", seen[3])  # and the final evaluation scored them
    with pytest.raises(AssertionError):
        assert_weights_equal(tmp_path / "run" / "model", seen[2])


def test_resume_restores_the_best_model_of_its_checkpoint(tiny_bert_dir, corpus, tmp_path):
    """The interrupted run saved a new best at step 4, after its last checkpoint (step 3); the resumed run's
    replay of step 4 scores lower (evaluation need not repeat bit for bit). It must report step 3 and save step
    3's weights, as the uninterrupted run with those scores does: never the step-4 best-model left on disk."""
    config = make_config(tiny_bert_dir, corpus, model={"save_max_seq_len": False},
                         eval={"every": 1})
    seen = []
    straight = train(config, output_dir=tmp_path / "straight",
                     evaluators=[scripted_evaluator([1, 2, 3, 0, 0, 0, 3], seen)])
    assert straight.metrics["best_step"] == 3
    assert_weights_equal(tmp_path / "straight" / "model", seen[2])

    first = []
    train(config, output_dir=tmp_path / "split", stop_after_step=4,
          evaluators=[scripted_evaluator([1, 2, 3, 4], first)])
    assert json.loads((tmp_path / "split" / "checkpoints" / "step-00000003" / "textcl_state.json").read_text())[
        "best_step"] == 3
    resumed = train(config, output_dir=tmp_path / "split", resume=True,
                    evaluators=[scripted_evaluator([0, 0, 0, 3], [])])
    assert resumed.metrics["best_step"] == 3
    assert_weights_equal(tmp_path / "split" / "model", seen[2])


def test_resume_refuses_another_batch_layout_naming_what_differs(tiny_bert_dir, corpus, tmp_path):
    from textcl.train.checkpoint import ResumeMismatch

    train(make_config(tiny_bert_dir, corpus), output_dir=tmp_path / "run", stop_after_step=3)
    other = make_config(tiny_bert_dir, corpus, train={"batch_size": 8, "grad_accum": 2})
    with pytest.raises(ResumeMismatch, match=r"step-00000003: it was written with another batch layout or selection "
                                             r"\(train\.batch_size: checkpoint 4, this run 8; "
                                             r"train\.grad_accum: checkpoint 1, this run 2\)"):
        train(other, output_dir=tmp_path / "run", resume=True)
    resumed = train(make_config(tiny_bert_dir, corpus), output_dir=tmp_path / "run", resume=True)
    assert resumed.finished and resumed.steps == 6


def test_group_field_masks_every_same_group_pair_with_real_group_names(tiny_bert_dir, tmp_path, monkeypatch):
    """Hundreds of real group names (Wikipedia titles), two pairs each: in every training batch, exactly the
    pairs that share a group are kept out of each other's negatives (a signed hash once made half the groups
    read as "no group")."""
    from textcl.data.wiki import wiki_leads
    from textcl.losses import false_negative_mask
    from textcl.train.batcher import Batcher

    titles = [title for title, _ in wiki_leads()[:300]]
    rows = [{"anchor": f"question {i}", "positive": f"answer {i}", "topic": titles[i // 2]} for i in range(600)]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    checked = []
    real = Batcher.__call__

    def spy(self, idx, epoch):
        batch, keys = real(self, idx, epoch)
        groups = [self.run.examples[i].group for i in idx]
        same = torch.tensor([[a == b for b in groups] for a in groups]) & ~torch.eye(len(groups), dtype=torch.bool)
        mask = false_negative_mask(None, None, group_ids=keys["group_ids"])
        assert torch.equal(mask, same)
        checked.append(int(same.sum()))
        return batch, keys

    monkeypatch.setattr(Batcher, "__call__", spy)
    config = make_config(tiny_bert_dir, data, data={"kind": "pairs", "group_field": "topic"},
                         train={"max_steps": 9, "batch_size": 64, "checkpoint_every": 0})
    train(config, output_dir=tmp_path / "run")
    assert len(checked) == 9 and sum(checked) > 100  # length grouping keeps many same-group rows together

    from textcl.data.pairs import read_examples_file

    examples = read_examples_file(data, "pairs", ["anchor", "positive"], "topic")
    assert [e.group for e in examples] == [titles[i // 2] for i in range(600)]


def test_missing_group_field_names_file_and_line(tmp_path):
    from textcl.data.pairs import read_examples_file
    from textcl.errors import DataFormatError

    data = tmp_path / "d.jsonl"
    data.write_text('{"anchor": "a", "positive": "b", "topic": 1}\n{"anchor": "a", "positive": "b"}\n')
    with pytest.raises(DataFormatError, match=rf"{data}:2: missing or non-string field\(s\) topic"):
        read_examples_file(data, "pairs", ["anchor", "positive"], "topic")


def test_hub_dataset_rows_become_examples():
    from datasets import Dataset

    from textcl.data.pairs import examples_from_dataset

    ds = Dataset.from_dict({"sent0": ["a", "b", ""], "sent1": ["x", "y", "z"], "hard_neg": ["n1", "n2", "n3"]})
    examples = examples_from_dataset(ds, "triples", ["sent0", "sent1", "hard_neg"])
    assert [(e.anchor, e.positive, e.negative) for e in examples] == [("a", "x", "n1"), ("b", "y", "n2")]
    text_only = Dataset.from_dict({"text": ["one sentence", "another"]})
    assert [e.anchor for e in examples_from_dataset(text_only, "unlabeled", ["sentence"])] == ["one sentence", "another"]


def test_retrieval_only_selection_is_labelled_and_saved_length_follows_training(tiny_bert_dir, corpus, tmp_path):
    """A run evaluated on retrieval alone says nDCG@10 (not Spearman) and which evaluation chose the best step;
    model.save_max_seq_len saves the training length."""
    beir = tmp_path / "mini"
    (beir / "qrels").mkdir(parents=True)
    docs = SENTENCES[:8]
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": d}) + "\n" for i, d in enumerate(docs)))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": d[:12]}) + "\n"
                                                for i, d in enumerate(docs)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(8)))
    config = make_config(tiny_bert_dir, corpus, model={"save_max_seq_len": True},
                         eval={"retrieval": [str(beir)], "every": 3}, train={"plot": True})
    result = train(config, output_dir=tmp_path / "run")
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "| mini ndcg@10 | nDCG@10 x100 |" in card and "Best step on mini ndcg@10:" in card
    assert "Spearman" not in card.split("## Recipe")[0] and "n/a" not in card
    assert result.metrics["selected_on"] == ["mini ndcg@10"]
    saved = json.loads((tmp_path / "run" / "model" / "sentence_bert_config.json").read_text())
    assert saved["max_seq_length"] == 16 and result.metrics["max_seq_len"] == {"train": 16, "saved": 16}
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "log.csv")) if r["eval_name"]]
    assert rows and all(float(r["eval_seconds"]) > 0 for r in rows)


@pytest.mark.parametrize("better_at, saved", [(16, 16), (128, 128)])
def test_save_max_seq_len_auto_saves_the_length_that_scores_better_on_the_selection_sets(
        tiny_bert_dir, corpus, tmp_path, better_at, saved):
    """Trained at 16 tokens from a model whose own limit is 128: the selection score (never a test set) at each
    length decides what the saved model encodes at; both figures are in metrics.json and the card."""
    lengths_seen = []

    def by_length(encoder):
        lengths_seen.append(encoder.max_seq_length)
        return {"by-length": 2.0 if encoder.max_seq_length == better_at else 1.0}

    config = make_config(tiny_bert_dir, corpus, eval={"every": 3})
    assert config.model.save_max_seq_len == "auto"
    result = train(config, output_dir=tmp_path / "run", evaluators=[by_length])
    auto = result.metrics["max_seq_len"]["auto"]
    assert auto["chosen"] == saved and result.metrics["max_seq_len"]["saved"] == saved
    assert {auto["train"]["length"]: auto["train"]["score"], auto["base"]["length"]: auto["base"]["score"]} == {
        better_at: 2.0, 16 + 128 - better_at: 1.0}
    assert set(lengths_seen) == {16, 128}  # evaluated at both lengths; training-time evaluations at 128
    st_config = json.loads((tmp_path / "run" / "model" / "sentence_bert_config.json").read_text())
    assert st_config["max_seq_length"] == saved
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert f"this model encodes up to\n{saved} tokens, chosen on the selection sets after training" in card


def test_save_max_seq_len_refuses_other_values(tiny_bert_dir, corpus):
    from textcl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.save_max_seq_len: expected true, false or auto, got 'sometimes'"):
        make_config(tiny_bert_dir, corpus, model={"save_max_seq_len": "sometimes"})


def test_resuming_a_checkpoint_from_before_outputs_were_kept_leaves_the_best_model(tiny_bert_dir, corpus, tmp_path):
    """A checkpoint written before checkpoints held the best model (no layout, no outputs/) says nothing about
    best-model/: the resume keeps the folder instead of deleting it."""
    seen = []
    config = make_config(tiny_bert_dir, corpus, model={"save_max_seq_len": False},
                         eval={"every": 1})
    train(config, output_dir=tmp_path / "run", stop_after_step=4, evaluators=[scripted_evaluator([1, 2, 3, 4], seen)])
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000003"
    state = json.loads((ckpt / "textcl_state.json").read_text())
    del state["layout"]
    (ckpt / "textcl_state.json").write_text(json.dumps(state))
    import shutil

    shutil.rmtree(ckpt / "outputs")
    resumed = train(config, output_dir=tmp_path / "run", resume=True,
                    evaluators=[scripted_evaluator([0, 0, 0, 0], [])])
    assert resumed.metrics["best_step"] == 3  # the checkpoint's record, and
    assert (tmp_path / "run" / "model").exists()
    assert_weights_equal(tmp_path / "run" / "model", seen[3])  # best-model/ (step 4's, on disk) was kept


def test_null_and_blank_group_cells_are_no_group_in_every_reader(tmp_path):
    """A blank CSV cell, a JSON null and a hub None all mean "in no group": never one shared group "" whose
    rows would all be masked against each other."""
    from datasets import Dataset

    from textcl.data.pairs import examples_from_dataset, read_examples_file
    from textcl.losses import false_negative_mask, group_keys

    csv = tmp_path / "d.csv"
    csv.write_text("anchor,positive,topic\nq1,a1,\nq2,a2,  \nq3,a3,t\nq4,a4,t\n")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"anchor": f"q{i}", "positive": f"a{i}", "topic": t}) + "\n"
                             for i, t in enumerate([None, "", "t", "t"])))
    hub = Dataset.from_dict({"anchor": ["q0", "q1", "q2", "q3"], "positive": ["a0", "a1", "a2", "a3"],
                             "topic": [None, "", "t", "t"]})
    for examples in (read_examples_file(csv, "pairs", ["anchor", "positive"], "topic"),
                     read_examples_file(jsonl, "pairs", ["anchor", "positive"], "topic"),
                     examples_from_dataset(hub, "pairs", ["anchor", "positive"], "topic")):
        assert [e.group for e in examples] == [None, None, "t", "t"]
        mask = false_negative_mask(None, None, group_ids=group_keys([e.group for e in examples]))
        assert mask.tolist() == [[False] * 4, [False] * 4, [False, False, False, True], [False, False, True, False]]


def test_group_field_on_a_txt_corpus_is_refused(tiny_bert_dir, corpus):
    from textcl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.group_field: is set \('topic'\) but a .txt file holds one text per"):
        make_config(tiny_bert_dir, corpus, data={"group_field": "topic"})


def test_nan_and_boolean_group_cells(tmp_path):
    from datasets import Dataset

    from textcl.data.pairs import examples_from_dataset, read_examples_file
    from textcl.errors import DataFormatError

    hub = Dataset.from_dict({"anchor": ["q0", "q1"], "positive": ["a0", "a1"], "topic": [float("nan"), 1.5]})
    assert [e.group for e in examples_from_dataset(hub, "pairs", ["anchor", "positive"], "topic")] == [None, "1.5"]
    data = tmp_path / "d.jsonl"
    data.write_text('{"anchor": "a", "positive": "b", "topic": true}\n')
    with pytest.raises(DataFormatError, match=rf"{data}:1: missing or non-string field\(s\) topic"):
        read_examples_file(data, "pairs", ["anchor", "positive"], "topic")


def test_the_training_length_must_win_by_the_margin(tiny_bert_dir, corpus, tmp_path):
    from textcl.train.evaluator import LENGTH_MARGIN

    def slightly_better_short(encoder):
        return {"m": 1.0 + (LENGTH_MARGIN / 2 if encoder.max_seq_length == 16 else 0.0)}

    result = train(make_config(tiny_bert_dir, corpus, eval={"every": 3}), output_dir=tmp_path / "run",
                   evaluators=[slightly_better_short])
    assert result.metrics["max_seq_len"]["auto"]["chosen"] == 128  # within the margin: the model's own limit


def test_a_resumed_auto_run_keeps_the_precision_its_checkpoint_trained_in(tiny_bert_dir, corpus, tmp_path,
                                                                           monkeypatch):
    """The first segment measured bf16 faster; the resumed one would measure fp32 faster: it keeps bf16."""
    from textcl.models import precision

    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path / "cache-1"))
    monkeypatch.setattr(precision, "precision_probe", lambda *a, **k: {"fp32_s": 1.0, "bf16_s": 0.5,
                                                                       "bf16_over_fp32": 0.5, "spread": 0.01})
    config = make_config(tiny_bert_dir, corpus, train={"mixed_precision": "auto"})
    train(config, output_dir=tmp_path / "run", stop_after_step=3)
    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path / "cache-2"))
    monkeypatch.setattr(precision, "precision_probe", lambda *a, **k: {"fp32_s": 1.0, "bf16_s": 2.0,
                                                                       "bf16_over_fp32": 2.0, "spread": 0.01})
    resumed = train(config, output_dir=tmp_path / "run", resume=True)
    assert resumed.finished and resumed.metrics["precision"]["resolved"] == "bf16"


def test_a_layout_recorded_without_a_key_is_not_compared_on_it():
    from textcl.train.checkpoint import layout_mismatch

    saved = {"processes": 1, "train.batch_size": 4}  # an older textcl recorded no precision
    assert layout_mismatch(saved, {"processes": 1, "train.batch_size": 4, "precision": "no"}) == []
    assert layout_mismatch(saved, {"processes": 2, "train.batch_size": 4, "precision": "no"}) == [
        "processes: checkpoint 1, this run 2"]


def test_threads_are_governed_unless_pinned(tiny_bert_dir, corpus, sts_file, tmp_path, monkeypatch):
    """Unpinned, a ThreadGovernor measures the other processes' load at the start and before each step, the
    evaluations on the training thread follow it too, and metrics.json records what it chose; ``train.threads``
    (or OMP_NUM_THREADS) pins the count, ungoverned."""
    from textcl import thread_governor as tg

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    tuned, during_eval = [], []
    real_tune = tg.ThreadGovernor.tune
    monkeypatch.setattr(tg.ThreadGovernor, "tune", lambda self: tuned.append(1) or real_tune(self))
    evaluator = lambda encoder: during_eval.append(tg.current()) or {"x": 1.0}  # noqa: E731
    try:
        governed = train(make_config(tiny_bert_dir, corpus, train={"max_steps": 3}, eval={"every": 3}),
                         output_dir=tmp_path / "a", evaluators=[evaluator])
        record = governed.metrics["thread_governor"]
        assert record["ceiling"] == tg.threads_for("train") and record["changes"][0]["others"] is not None
        assert len(tuned) >= 4  # at the start and before each of the 3 steps
        assert during_eval and isinstance(during_eval[0], tg.ThreadGovernor) and tg.current() is None
        tuned.clear()
        pinned = train(make_config(tiny_bert_dir, corpus, train={"max_steps": 3, "threads": 1}),
                       output_dir=tmp_path / "b")
        assert pinned.metrics["thread_governor"] is None and pinned.metrics["threads"] == 1 and tuned == []
    finally:
        torch.set_num_threads(before)
    with pytest.raises(Exception, match=r"train\.threads"):
        make_config(tiny_bert_dir, corpus, train={"threads": 0})
