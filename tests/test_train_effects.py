"""What each training option does to a run, checked by its effect: the mask the loss applies, the loss a step
computes (against a hand or functional computation on the same embeddings), the weights a run saves.

Every run here uses the tiny BERT and a step or a few; ``Spies`` records what the loop handed its parts."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from test_train import SENTENCES as TRAIN_SENTENCES
from textcl.train import Trainer

SENTENCES = TRAIN_SENTENCES[:16]  # tests/test_train.py's corpus, each line once
PAIRS = [("a cat sits on the mat", "a cat is sitting on a mat"), ("a man plays a guitar", "a man is singing"),
         ("the dog runs in the park", "a dog is running outside"), ("it is raining", "the sun is out"),
         ("a woman slices an onion", "a woman cuts an onion"), ("two kids play", "a man reads a book"),
         ("the car is red", "the car is blue"), ("birds fly south", "birds migrate south")]
SCORES = [4.8, 2.0, 4.2, 0.4, 4.6, 0.2, 1.8, 4.0]
TEMPERATURE = 0.05  # LossConfig's default


def make_config(model_dir, data_path, **sections):
    """tests/test_train.py's recipe, one step of 8 rows and no checkpoint unless a test asks otherwise."""
    from test_train import make_config as train_config

    return train_config(model_dir, data_path, **{**sections, "train": {
        "batch_size": 8, "max_steps": 1, "checkpoint_every": 0, **sections.get("train", {})}})


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path, rows):
    return write_lines(path, [json.dumps(r) for r in rows])


def weights(model_dir) -> dict:
    return load_file(str(model_dir / "model.safetensors"))


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def snapshot(encoder) -> dict:
    return {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}


class Spies:
    """Records, per micro-batch, what the batcher gave (examples, batch, keys) and what the loss got and
    returned (``views``: the embeddings); per optimizer step, the micro-batches it consumed and its loss."""

    def __init__(self, mp: pytest.MonkeyPatch):
        import textcl.train.step as step
        import textcl.train.trainer as trainer
        from textcl.train.batcher import Batcher

        self.batches, self.views, self.steps = [], [], []
        real_batcher, real_loss, real_step = Batcher.__call__, step.contrastive_loss, trainer.train_step

        def batcher(this, idx, epoch):
            batch, keys = real_batcher(this, idx, epoch)
            self.batches.append(SimpleNamespace(idx=[int(i) for i in idx], examples=[this.run.examples[i] for i in idx],
                                                batch=batch, keys=keys))
            return batch, keys

        def loss(run, a, p, n=None, keys=None):
            out = real_loss(run, a, p, n, keys=keys)
            self.views.append(SimpleNamespace(a=a.detach().clone(), p=p.detach().clone(),
                                              n=None if n is None else n.detach().clone(), loss=float(out.detach())))
            return out

        def train_step(run, micro_batches, step_index):
            out = real_step(run, micro_batches, step_index)
            self.steps.append(SimpleNamespace(step=step_index, micro_batches=len(micro_batches), loss=out,
                                              raw=snapshot(run.encoder)))
            return out

        mp.setattr(Batcher, "__call__", batcher)
        mp.setattr(step, "contrastive_loss", loss)
        mp.setattr(trainer, "train_step", train_step)


def run(config, out, evaluators=()):
    """Train ``config`` into ``out`` with fresh spies: ``(result, trainer, spies)``."""
    with pytest.MonkeyPatch.context() as mp:
        spies = Spies(mp)
        trainer = Trainer(config, out, evaluators)
        result = trainer.run()
    return result, trainer, spies


def first_loss(config, out) -> float:
    return run(config, out)[2].steps[0].loss


@pytest.fixture()
def corpus(tmp_path):
    return write_lines(tmp_path / "corpus.txt", [f"{s} {i}" for i, s in enumerate(SENTENCES * 2)])


# ---------------------------------------------------------------------------------------------- 1. the guide


def test_the_guide_masks_the_candidates_guided_mask_names_and_changes_the_run(tiny_bert_dir, tmp_path, monkeypatch):
    """Each pair appears reversed too, in one batch of 16: row (a, b)'s candidate from row (b, a) is the
    anchor's own text, which the guide rates above the positive. The mask the loss applies is
    ``guided_mask`` of the guide's embeddings (the starting model's), the loss is InfoNCE under that mask,
    and the guided run ends elsewhere than the unguided one."""
    import textcl.losses.infonce as infonce
    from textcl.losses import guided_mask, info_nce
    from textcl.models import Encoder

    rows = [{"anchor": a, "positive": b} for a, b in PAIRS] + [{"anchor": b, "positive": a} for a, b in PAIRS]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    applied = []
    real_rows = infonce._info_nce_rows
    monkeypatch.setattr(infonce, "_info_nce_rows", lambda *a, **k: applied.append(k["mask"]) or real_rows(*a, **k))
    base = dict(data={"kind": "pairs"}, loss={"mask_false_negatives": False},
                train={"batch_size": 16, "max_steps": 3, "epochs": 3})
    train_plain = make_config(tiny_bert_dir, data, **base)
    guided = make_config(tiny_bert_dir, data, **{**base, "loss": {"mask_false_negatives": False,
                                                                   "guide": {"model": "self"}}})
    _, _, spies = run(guided, tmp_path / "guided")
    start = Encoder.load(tiny_bert_dir, device="cpu")
    assert len(spies.batches) == len(spies.views) == len(applied) == 3
    for seen, views, mask in zip(spies.batches, spies.views, applied):
        anchors, positives = [e.anchor for e in seen.examples], [e.positive for e in seen.examples]
        ga, gp = seen.keys["guide_anchors"], seen.keys["guide_positives"]
        # the frozen starting model (in bf16 where the device has it natively, hence the tolerance)
        np.testing.assert_allclose(ga.numpy(), start.encode(anchors, normalize=True), atol=2e-3)
        np.testing.assert_allclose(gp.numpy(), start.encode(positives, normalize=True), atol=2e-3)
        expected = guided_mask(ga, gp, gp)
        assert torch.equal(mask, expected)
        own_text = torch.tensor([[a == p for p in positives] for a in anchors])
        assert own_text.sum() == 16 and bool(mask[own_text].all())  # every reversed row is masked
        assert views.loss == pytest.approx(float(info_nce(views.a, views.p, temperature=TEMPERATURE, mask=expected)),
                                           rel=1e-5)
        assert abs(views.loss - float(info_nce(views.a, views.p, temperature=TEMPERATURE))) > 1e-3
    applied.clear()
    run(train_plain, tmp_path / "plain")
    assert applied == [None] * 3  # the unguided run masks nothing
    assert max_difference(weights(tmp_path / "guided" / "model"), weights(tmp_path / "plain" / "model")) > 1e-5


# ----------------------------------------------------------------------------- 2. Matryoshka and AnglE losses


@pytest.fixture()
def scored(tmp_path):
    return write_lines(tmp_path / "train.tsv", [f"{a}\t{b}\t{s}" for (a, b), s in zip(PAIRS * 2, SCORES * 2)])


@pytest.mark.parametrize("loss", ["infonce", "angle"])
def test_matryoshka_first_step_loss_is_the_sum_of_its_dimensions_losses(tiny_bert_dir, scored, tmp_path, loss):
    """Dropout off, so each run's first step sees the same embeddings: the loss of dims [32, 8] is the loss of
    [32] plus the loss of [8], and [32] (the whole embedding) is the loss without Matryoshka."""
    if loss == "infonce":
        data = write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": a, "positive": b} for a, b in PAIRS * 2])
        sections = {"data": {"kind": "pairs"}}
    else:
        data, sections = scored, {"data": {"kind": "scored"}}
    sections["model"] = {"dropout": 0.0}

    def first(dims):
        lc = {"name": loss, **({"matryoshka": {"dims": dims}} if dims else {})}
        return first_loss(make_config(tiny_bert_dir, data, **sections, loss=lc), tmp_path / f"run-{dims}")

    both, full, small, plain = first([32, 8]), first([32]), first([8]), first(None)
    assert full == pytest.approx(plain, rel=1e-6)
    assert both == pytest.approx(full + small, rel=1e-5)
    assert abs(small - full) > 1e-3  # the 8-dim loss is a loss of its own


def test_angle_first_step_loss_is_angle_on_the_starting_models_embeddings(tiny_bert_dir, scored, tmp_path):
    from textcl.losses import AnglE, CoSENT
    from textcl.models import Encoder

    config = make_config(tiny_bert_dir, scored, data={"kind": "scored"}, loss={"name": "angle"},
                         model={"dropout": 0.0})
    _, _, spies = run(config, tmp_path / "run")
    [seen] = spies.batches
    start = Encoder.load(tiny_bert_dir, device="cpu").eval()
    with torch.no_grad():
        a, p = start(seen.batch["anchor"]), start(seen.batch["positive"])
    scores = seen.keys["scores"]
    assert scores.tolist() == pytest.approx([e.score for e in seen.examples])
    expected = float(AnglE()(a, p, scores=scores))
    assert spies.steps[0].loss == pytest.approx(expected, rel=1e-5)
    assert abs(expected - float(CoSENT()(a, p, scores=scores))) > 1e-2  # the check tells AnglE from CoSENT


# -------------------------------------------------------------------------------- 3. duplicate-text masking


def test_duplicate_lines_are_masked_exactly_and_change_the_loss(tiny_bert_dir, tmp_path):
    """Each of 8 sentences four times: in every batch the keys' mask marks exactly the pairs of identical
    texts, the loss is InfoNCE under that mask, and it differs from the run with masking off."""
    from textcl.losses import false_negative_mask, info_nce

    data = write_lines(tmp_path / "dups.txt", SENTENCES[:8] * 4)
    config = make_config(tiny_bert_dir, data, model={"dropout": 0.0}, train={"max_steps": 4})
    _, _, spies = run(config, tmp_path / "masked")
    marked = []
    for seen, views in zip(spies.batches, spies.views, strict=True):
        texts = [e.anchor for e in seen.examples]
        same = torch.tensor([[a == b for b in texts] for a in texts]) & ~torch.eye(len(texts), dtype=torch.bool)
        keys = seen.keys
        mask = false_negative_mask(keys["positive_keys"], keys["positive_keys"], anchor_keys=keys["anchor_keys"])
        assert torch.equal(mask, same)
        assert views.loss == pytest.approx(float(info_nce(views.a, views.p, temperature=TEMPERATURE, mask=same)),
                                           rel=1e-5)
        marked.append(int(same.sum()))
    assert len(marked) == 4 and marked[0] > 0 and sum(marked) >= 16
    unmasked = first_loss(make_config(tiny_bert_dir, data, model={"dropout": 0.0},
                                      loss={"mask_false_negatives": False}), tmp_path / "unmasked")
    # dropout off: a duplicate's embedding equals the positive's, so as a negative it adds a full positive's
    # weight to the softmax; masked, the loss is lower
    assert spies.steps[0].loss < unmasked - 0.1


# ------------------------------------------------------------------------------------- 4. the other flags


def test_hard_negative_weight_raises_the_loss_as_infonce_computes_it(tiny_bert_dir, tmp_path):
    """Loss per anchor i: -s_ii/t + log(sum_j exp(s_ij/t) + sum_j exp(n_ij/t + w [i == j])), s cosines to the
    positives and n to the hard negatives, by hand with numpy."""
    from textcl.losses import info_nce

    rows = [{"anchor": a, "positive": b, "negative": SENTENCES[i]} for i, (a, b) in enumerate(PAIRS * 2)]
    data = write_jsonl(tmp_path / "triples.jsonl", rows)
    losses, views = [], []
    for w in (0.0, 0.5, 2.0):
        config = make_config(tiny_bert_dir, data, data={"kind": "triples"}, model={"dropout": 0.0},
                             loss={"hard_negative_weight": w, "mask_false_negatives": False})
        _, _, spies = run(config, tmp_path / f"w{w}")
        losses.append(spies.steps[0].loss)
        views.append(spies.views[0])
    assert losses[0] < losses[1] < losses[2]
    for v in views[1:]:  # dropout off: every run's first step embeds the same batch alike
        torch.testing.assert_close(v.n, views[0].n, atol=1e-6, rtol=0)
    for w, loss, v in zip((0.0, 0.5, 2.0), losses, views):
        assert loss == pytest.approx(float(info_nce(v.a, v.p, v.n[:, None], temperature=TEMPERATURE,
                                                    hard_negative_weight=w)), rel=1e-5)
        a, p, n = (torch.nn.functional.normalize(t, dim=-1).double().numpy() for t in (v.a, v.p, v.n))
        s, t = a @ p.T / TEMPERATURE, a @ n.T / TEMPERATURE + w * np.eye(len(a))
        by_hand = np.mean(-np.diag(s) + np.log(np.exp(s).sum(1) + np.exp(t).sum(1)))
        assert loss == pytest.approx(by_hand, rel=1e-4)


def test_two_towers_end_with_two_trained_encoders_and_a_shared_tower_with_one(tiny_bert_dir, tmp_path):
    from textcl.models import Encoder

    data = write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": a, "positive": b} for a, b in PAIRS * 2])
    Encoder.load(tiny_bert_dir, device="cpu").save(tmp_path / "start")
    start = weights(tmp_path / "start")
    two = make_config(tiny_bert_dir, data, data={"kind": "pairs"}, model={"two_tower": True}, train={"max_steps": 2})
    run(two, tmp_path / "two")
    query, document = weights(tmp_path / "two" / "model"), weights(tmp_path / "two" / "model-document")
    assert max_difference(query, document) > 1e-5
    assert max_difference(query, start) > 1e-5 and max_difference(document, start) > 1e-5  # both towers trained
    shared = make_config(tiny_bert_dir, data, data={"kind": "pairs"}, train={"max_steps": 2})
    run(shared, tmp_path / "shared")
    assert (tmp_path / "shared" / "model").is_dir() and not (tmp_path / "shared" / "model-document").exists()


@pytest.mark.parametrize("start, lr, clamped", [(0.05, 1e-3, False), (0.0101, 2e-2, True)])
def test_learnt_temperature_moves_and_stays_above_one_over_max_scale(tiny_bert_dir, corpus, tmp_path, start, lr,
                                                                      clamped):
    """From 0.05 the temperature moves; from just above 1 / max_scale (0.01) with a large step it is held at
    0.01, the bound: the learnt parameter too, not only the value in use. The log reports the temperature the
    loss ends with."""
    import csv

    config = make_config(tiny_bert_dir, corpus, loss={"learnable_temperature": True, "temperature": start},
                         optim={"lr": lr}, train={"max_steps": 4})
    _, trainer, _ = run(config, tmp_path / "run")
    loss_fn = trainer.run_state.acc.unwrap_model(trainer.run_state.loss_fn)
    learnt = float(loss_fn.temperature.detach())
    assert learnt >= 1.0 / loss_fn.max_scale * (1 - 1e-6)
    # the parameter itself is bounded after each step, not only the value the forward uses (a parameter left
    # past the bound would sit in a dead zone, taking steps to come back once its gradient turns)
    assert math.exp(-float(loss_fn.logit_scale)) == pytest.approx(learnt, rel=1e-6)
    assert abs(learnt - start) > 1e-5
    if clamped:
        assert learnt == pytest.approx(0.01, rel=1e-6)
    log = [r for r in csv.DictReader(open(tmp_path / "run" / "log.csv")) if r["temperature"]]
    assert float(log[-1]["temperature"]) == pytest.approx(learnt, abs=1e-5)


def test_token_cutoff_masks_the_configured_share_of_the_tokens_the_step_sees(tiny_bert_dir, corpus, tmp_path):
    from textcl.models import Encoder

    rate = 0.25
    config = make_config(tiny_bert_dir, corpus, data={"token_augment": {"token_cutoff": {"rate": rate}}},
                         train={"max_steps": 2})
    _, _, spies = run(config, tmp_path / "run")
    tokenizer = Encoder.load(tiny_bert_dir, device="cpu").tokenizer
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
    cut = real = rows = 0
    for seen in spies.batches:
        plain = tokenizer([e.anchor.lower() for e in seen.examples], padding=True, truncation=True, max_length=16,
                          return_tensors="pt")
        anchor, positive = seen.batch["anchor"], seen.batch["positive"]
        assert torch.equal(anchor["attention_mask"], plain["attention_mask"])  # mode mask: same lengths
        for row, ids in enumerate(plain["input_ids"].tolist()):
            n = sum(1 for t in ids if t not in special)
            changed = [j for j, t in enumerate(ids) if anchor["input_ids"][row, j] != t]
            assert len(changed) == min(round(rate * n), n - 1)
            assert all(anchor["input_ids"][row, j] == tokenizer.mask_token_id for j in changed)
            cut, real, rows = cut + len(changed), real + n, rows + 1
        assert not torch.equal(anchor["input_ids"], positive["input_ids"])  # each view cut on its own
    assert abs(cut - rate * real) <= 0.5 * rows  # the configured share, up to each row's rounding


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_model_dropout_sets_the_views_noise(tiny_bert_dir, corpus, tmp_path, rate):
    """The two views of a text are one forward of the same tokens: equal embeddings without dropout, different
    ones with it; the run's encoder in train mode zeroes ``rate`` of its embedding outputs (the model's own
    rate is 0.1)."""
    config = make_config(tiny_bert_dir, corpus, model={"dropout": rate})
    _, trainer, spies = run(config, tmp_path / "run")
    [v] = spies.views
    if rate == 0.0:
        torch.testing.assert_close(v.a, v.p, atol=1e-6, rtol=0)
    else:
        assert float((v.a - v.p).abs().max()) > 1e-2
    encoder = trainer.run_state.encoder.train()
    zeroed = []

    def share_zeroed(module, inputs, output):
        zeroed.append(float((output == 0).float().mean() - (inputs[0] == 0).float().mean()))

    hook = encoder.model.embeddings.dropout.register_forward_hook(share_zeroed)
    try:
        with torch.no_grad():
            encoder(encoder.tokenize(SENTENCES, max_length=16))
    finally:
        hook.remove()
    assert zeroed[0] == pytest.approx(rate, abs=0.04)


def test_grad_accum_steps_consume_that_many_micro_batches_and_halve_the_steps(tiny_bert_dir, corpus, tmp_path):
    """32 lines in micro-batches of 4: 8 steps of one micro-batch, or with grad_accum 2, 4 steps of two; each
    epoch uses every line once either way."""
    for accum, steps in ((1, 8), (2, 4)):
        config = make_config(tiny_bert_dir, corpus, train={"batch_size": 4, "grad_accum": accum, "max_steps": None})
        result, trainer, spies = run(config, tmp_path / f"accum{accum}")
        assert result.steps == trainer.run_state.steps_per_epoch == len(spies.steps) == steps
        assert [s.micro_batches for s in spies.steps] == [accum] * steps
        assert sorted(i for b in spies.batches for i in b.idx) == list(range(32))


# ------------------------------------------------------------------------------ 6. selection with an average


def test_ema_selection_saves_the_averaged_weights_the_evaluator_scored(tiny_bert_dir, corpus, tmp_path):
    """optim.ema_decay with eval.every 2 and scores that make step 4 best: the saved model is the weights the
    evaluator was shown at step 4, which are the average of the raw weights by the update rule
    (a <- d a + (1 - d) w, d = min(decay, (1 + t) / (10 + t))), not step 4's raw weights."""
    from textcl.models import Encoder

    decay = 0.9
    shown, scores = [], iter([1.0, 5.0, 3.0, 5.0])  # steps 2, 4, 6, then the final model

    def evaluator(encoder):
        shown.append(snapshot(encoder))
        return {"my-metric": next(scores)}

    config = make_config(tiny_bert_dir, corpus, model={"save_max_seq_len": False}, eval={"every": 2},
                         train={"max_steps": 6, "batch_size": 4},
                         optim={"ema_decay": decay, "scheduler": "constant"})
    initial = snapshot(Encoder.load(tiny_bert_dir, device="cpu"))
    result, _, spies = run(config, tmp_path / "run", evaluators=[evaluator])
    assert result.metrics["best_step"] == 4 and len(shown) == 4
    saved = weights(tmp_path / "run" / "model")
    assert max_difference(saved, shown[1]) == 0.0
    raw4 = spies.steps[3].raw
    assert max_difference(saved, raw4) > 1e-5  # the raw weights were not what was scored and saved
    average = {k: v.clone() for k, v in initial.items()}
    for t, s in enumerate(spies.steps[:4], start=1):
        d = min(decay, (1 + t) / (10 + t))
        average = {k: d * average[k] + (1 - d) * s.raw[k] if average[k].is_floating_point() else s.raw[k]
                   for k in average}
    assert max_difference(saved, average) < 1e-6
    assert max_difference(shown[1], shown[2]) > 1e-6  # step 6's average is another
