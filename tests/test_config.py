"""Recipes: every shipped recipe validates; bad recipes fail before any work with the field named."""
from pathlib import Path

import pytest

from textcl.config import load_config
from textcl.errors import ConfigError

# tune-*.yaml are search spaces for textcl tune, not recipes (tests/test_tune_space.py checks them)
RECIPES = sorted(p for p in (Path(__file__).parent.parent / "recipes").glob("*.yaml") if not p.name.startswith("tune-"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate(recipe):
    config = load_config(recipe)
    assert config.name and config.train.batch_size >= 2


def test_simcse_recipes_follow_the_paper():
    bert = load_config(Path(RECIPES[0]).parent / "unsup-simcse-bert-base.yaml")
    assert (bert.train.batch_size, bert.optim.lr, bert.model.max_seq_len, bert.loss.temperature) == (64, 3e-5, 32, 0.05)
    assert bert.model.mlp_head and bert.model.pooling == "cls_before_pooler" and bert.eval.every == 125
    roberta = load_config(Path(RECIPES[0]).parent / "unsup-simcse-roberta-base.yaml")
    assert (roberta.train.batch_size, roberta.optim.lr) == (512, 1e-5)
    sup = load_config(Path(RECIPES[0]).parent / "sup-simcse-bert-base.yaml")
    assert (sup.data.kind, sup.train.batch_size, sup.optim.lr, sup.train.epochs) == ("triples", 512, 5e-5, 3)


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("loss:\n  temperatur: 0.1\n", "loss.temperatur: unknown field; expected one of temperature, similarity"),
    ("train:\n  batch_size: many\n", "train.batch_size: expected int, got str 'many'"),
    ("train:\n  batch_size: 1\n", "train.batch_size: in-batch negatives need a batch of at least 2"),
    ("data:\n  path: /no/such/corpus.txt\n", "data.path: file '/no/such/corpus.txt' does not exist"),
    ("loss:\n  similarity: jaccard\n", "loss.similarity: expected one of cosine, dot, euclidean, got 'jaccard'"),
    ("model:\n  pooling: avg\n", "model.pooling: expected one of cls, cls_before_pooler, mean, max, first_last_avg"),
    ("train:\n  mixed_precision: fp8\n", "train.mixed_precision: expected one of no, fp16, bf16"),
    ("data:\n  augment: {word_delete: {rate: 0.1}}\n", "data.augment: unknown augmenter 'word_delete'"),
    ("data:\n  augment: {token_cutoff: {rate: 0.1}}\n", "data.augment: token_cutoff goes in data.token_augment"),
    ("loss:\n  moco: {momentum: 1.5}\n", r"loss.moco.momentum: expected a value in \[0, 1\)"),
    ("loss: 3\n", "loss: expected a mapping of LossConfig fields, got int"),
    ("optim:\n  ema_decay: 1.0\n", r"optim.ema_decay: expected a decay in \[0, 1\) \(0 = no weight average\), got 1.0"),
    ("optim:\n  eps: .nan\n", "optim.eps: expected a positive number, got nan"),
    ("optim:\n  eps: 0\n", "optim.eps: expected a positive number, got 0"),
    ("optim:\n  betas: [.nan, 0.999]\n", r"optim.betas: expected two numbers in \[0, 1\), got \[nan, 0.999\]"),
    ("optim:\n  betas: [nan, 0.999]\n", r"optim.betas: expected two numbers in \[0, 1\), got \[nan, 0.999\]"),
    ("optim:\n  betas: [0.9, fast]\n", r"optim.betas\[1\]: expected float, got str 'fast'"),
    ("optim:\n  betas: [0.9, 1.5]\n", r"optim.betas: expected two numbers in \[0, 1\)"),
    ("loss:\n  guide: {margin: .inf}\n", "loss.guide.margin: expected a finite number, got inf"),
    ("loss:\n  matryoshka: {dims: [32, 16], weights: [1, .nan]}\n",
     r"loss.matryoshka.weights: expected 2 non-negative weights \(one per dimension\), got \[1.0, nan\]"),
    ("loss:\n  matryoshka: {dims: [32, 16], weights: [1, heavy]}\n", r"loss.matryoshka.weights\[1\]: expected float, got str"),
])
def test_bad_recipe_names_the_field_and_the_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ")


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "train:\n  batch_size: 4\n  - oops\n")
    with pytest.raises(ConfigError, match=r"not valid YAML:3"):
        load_config(path)


def test_overrides_parse_values_as_yaml(tmp_path):
    path = write(tmp_path, "train:\n  batch_size: 4\n")
    config = load_config(path, ["train.batch_size=128", "optim.lr=1e-5", "eval.data=[stsb-dev, stsb-test]",
                                "loss.moco.queue_size=64", "train.mixed_precision=no"])
    assert config.train.batch_size == 128 and config.optim.lr == 1e-5  # YAML reads 1e-5 as a string
    assert config.train.mixed_precision == "no"  # and `no` as False
    assert config.eval.data == ["stsb-dev", "stsb-test"] and config.loss.moco.queue_size == 64


def test_list_elements_read_as_their_fields_type(tmp_path):
    # YAML 1.1 reads 1e-1 (no dot) as a string: an element of a list of floats is read as a float field is
    config = load_config(write(tmp_path, "optim:\n  betas: [0.9, 1e-1]\n"), ["eval.data=[]", "eval.test=[]"])
    assert config.optim.betas == [0.9, 0.1]


def test_override_without_equals(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(write(tmp_path, "{}\n"), ["train.batch_size"])


def test_cli_check_and_errors(tmp_path, capsys):
    from textcl.cli import main

    good = write(tmp_path, "train:\n  batch_size: 4\n")
    assert main(["train", str(good), "--check"]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: -1\n")
    assert main(["train", str(bad), "--check"]) == 2
    assert f"{bad}: optim.lr: expected a positive number, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("sections, message", [
    ({"loss": {"moco": {}, "matryoshka": {"dims": [32, 16]}}},
     r"loss.matryoshka: is set \(.*\) but MoCo's loss contrasts full embeddings against its queue"),
    ({"loss": {"moco": {}}, "data": {"kind": "pairs", "group_field": "topic"}},
     r"data.group_field: is set \('topic'\) but MoCo's queue keeps no groups"),
    ({"loss": {"hard_negative_weight": 0.5}, "data": {"kind": "pairs"}},
     r"loss.hard_negative_weight: is set \(0.5\) but weights hard negatives, and data.kind 'pairs' has none"),
    ({"loss": {"mini_batch_size": 8}}, r"loss.mini_batch_size: is set \(8\) but is GradCache's mini-batch"),
    ({"loss": {"nt_xent": True, "symmetric": True}}, r"loss.symmetric: is set \(True\) but NT-Xent is symmetric"),
    ({"loss": {"scale": 30.0}}, r"loss.scale: is set \(30.0\) but is CoSENT's and AnglE's"),
    ({"loss": {"angle": {"ibn_weight": 0.0}}}, r"loss.angle: is set .* but configures loss.name angle"),
    ({"loss": {"name": "cosent", "temperature": 0.1}, "data": {"kind": "scored", "path": "stsb-train"}},
     r"loss.temperature: is set \(0.1\) but loss.name cosent reads only the pairs and their scores"),
    ({"loss": {"name": "cosent"}, "data": {"kind": "scored", "path": "stsb-train", "group_field": "genre"}},
     r"data.group_field: is set \('genre'\) but scored data is read in an STS layout"),
    ({"data": {"kind": "unlabeled", "anchor_field": "q"}},
     r"data.anchor_field: is set \('q'\) but unlabeled data has one text per example"),
    ({"data": {"kind": "unlabeled", "group_field": "g"}},
     r"data.group_field: is set \('g'\) but the packaged Wikipedia sentences carry no groups"),
    ({"data": {"kind": "pairs", "negative_field": "neg"}},
     r"data.negative_field: is set \('neg'\) but data.kind 'pairs' has no hard negatives"),
])
def test_a_field_this_mode_never_reads_is_refused_by_name(tmp_path, sections, message):
    """A field set away from its default in a mode that ignores it is an error, never a silent no-op (MoCo once
    dropped loss.matryoshka and data.group_field while the model card claimed a Matryoshka loss)."""
    from textcl.config import config_from_dict

    sections = {**sections, "data": {**sections.get("data", {})}}
    if sections["data"].get("kind") == "pairs":
        pairs = tmp_path / "p.jsonl"
        pairs.write_text('{"anchor": "a", "positive": "b", "topic": "t"}\n')
        sections["data"].setdefault("path", str(pairs))
    with pytest.raises(ConfigError, match=message):
        config_from_dict(sections)
