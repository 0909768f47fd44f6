"""WiSE-FT merging (textcl.models.merge, ``textcl merge``): a hand-computed interpolation, the two ends exactly,
mismatched models refused by name."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from textcl.cli import main
from textcl.models import Encoder
from textcl.models.merge import MergeMismatch, interpolate, merge_folders

TEXTS = ["a cat sits on the mat", "the stock market fell sharply", "a man plays the guitar"]


def test_interpolation_by_hand():
    base = {"w": torch.tensor([0.0, 2.0]), "h": torch.tensor([1.0], dtype=torch.bfloat16),
            "ids": torch.tensor([0, 1, 2])}
    tuned = {"w": torch.tensor([4.0, 6.0]), "h": torch.tensor([3.0], dtype=torch.bfloat16),
             "ids": torch.tensor([0, 1, 2])}
    out = interpolate(base, tuned, 0.25)
    assert out["w"].tolist() == [1.0, 3.0]
    assert out["h"].dtype == torch.bfloat16 and out["h"].tolist() == [1.5]
    assert out["ids"].tolist() == [0, 1, 2]


def test_interpolation_refuses_what_is_not_one_architecture():
    w = torch.zeros(2)
    with pytest.raises(MergeMismatch, match=r"^A has tensor 'extra', which B lacks \(1 tensor\(s\) differ\)"):
        interpolate({"w": w, "extra": w}, {"w": w}, 0.5, names=("A", "B"))
    with pytest.raises(MergeMismatch, match=r"^tensor 'w': A has \(2,\) torch.float32, B has \(3,\) torch.float32"):
        interpolate({"w": w}, {"w": torch.zeros(3)}, 0.5, names=("A", "B"))
    with pytest.raises(MergeMismatch, match=r"^tensor 'ids' \(torch.int64\) differs between A and B"):
        interpolate({"ids": torch.tensor([0, 1])}, {"ids": torch.tensor([1, 0])}, 0.5, names=("A", "B"))
    for alpha in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(Exception, match=r"alpha: expected a number in \[0, 1\]"):
            interpolate({"w": w}, {"w": w}, alpha)


@pytest.fixture(scope="module")
def two_models(tiny_bert_dir, tmp_path_factory):
    """(base folder, tuned folder): the tiny BERT and a copy with every weight moved."""
    root = tmp_path_factory.mktemp("merge")
    base = Encoder.load(tiny_bert_dir, device="cpu")
    base.save(root / "base")
    tuned = copy.deepcopy(base)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.1 * torch.randn_like(p))
    tuned.save(root / "tuned")
    return root / "base", root / "tuned"


@pytest.mark.parametrize("alpha,side", [(0.0, 0), (1.0, 1)])
def test_merge_at_either_end_gives_that_model_exactly(two_models, tmp_path, alpha, side):
    out = merge_folders(*two_models, alpha, tmp_path / "merged")
    merged, expected = Encoder.load(out, device="cpu"), Encoder.load(two_models[side], device="cpu")
    got, want = merged.state_dict(), expected.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    np.testing.assert_array_equal(merged.encode(TEXTS), expected.encode(TEXTS))


def test_merge_halfway_is_the_mean_and_loads_in_sentence_transformers(two_models, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = merge_folders(*two_models, 0.5, tmp_path / "merged")
    a, b = (Encoder.load(p, device="cpu").state_dict() for p in two_models)
    got = Encoder.load(out, device="cpu").state_dict()
    key = "model.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(got[key], (a[key] + b[key]) / 2, rtol=0, atol=1e-7)
    st = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(st.encode(TEXTS, normalize_embeddings=True),
                               Encoder.load(out, device="cpu").encode(TEXTS), atol=1e-5)


def test_mismatched_folders_are_refused_by_name(two_models, tmp_path, capsys):
    from transformers import BertConfig, BertModel

    other = tmp_path / "wide"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=Encoder.load(two_models[0]).tokenizer.vocab_size, hidden_size=48,
                         num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=128)).save_pretrained(other)
    Encoder.load(two_models[0]).tokenizer.save_pretrained(other)
    capsys.readouterr()
    code = main(["merge", str(two_models[0]), str(other), "--alpha", "0.5", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "m").exists()
    assert err.startswith(f"textcl: error: tensor 'model.embeddings.word_embeddings.weight': {two_models[0]} has (")
    assert f", {other} has (" in err and "not the same architecture" in err

    cls = Encoder.load(two_models[1], pooling="cls_before_pooler")
    cls.save(tmp_path / "cls")
    capsys.readouterr()
    assert main(["merge", str(two_models[0]), str(tmp_path / "cls"), "--alpha", "0.5", "--out",
                 str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.strip() == (f"textcl: error: pooling: {two_models[0]} has 'mean', "
                                               f"{tmp_path / 'cls'} has 'cls_before_pooler': not the same architecture")
    assert main(["merge", str(two_models[0]), str(two_models[1]), "--alpha", "2", "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.strip() == "textcl: error: --alpha: expected a number in [0, 1], got 2.0"


def test_the_merge_command_writes_the_folder(two_models, tmp_path, capsys):
    assert main(["merge", str(two_models[0]), str(two_models[1]), "--alpha", "0.3", "--out", str(tmp_path / "m")]) == 0
    assert "wrote" in capsys.readouterr().err
    card = (tmp_path / "m" / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and "(1 - 0.3) x" in card


def test_merge_never_replaces_what_is_not_a_model(two_models, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    assert main(["merge", str(two_models[0]), str(two_models[1]), "--alpha", "0.5", "--out", str(notes)]) == 2
    assert capsys.readouterr().err.strip().startswith(f"textcl: error: --out {notes}: is a file, not a folder")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("keep me")
    assert main(["merge", str(two_models[0]), str(two_models[1]), "--alpha", "0.5", "--out", str(mine)]) == 2
    assert capsys.readouterr().err.strip() == (f"textcl: error: --out: {mine} is a folder that holds no model; the "
                                               "merge replaces the folder it writes, so give a new or a model folder")
    assert main(["merge", str(two_models[0]), str(two_models[1]), "--alpha", "0.5", "--out",
                 str(two_models[1].parent)]) == 2
    assert capsys.readouterr().err.strip() == (f"textcl: error: --out: {two_models[1].parent} would replace BASE "
                                               f"{two_models[0]}; write the merge elsewhere")
    assert notes.read_text() == "keep me" and (mine / "keep.txt").read_text() == "keep me"


def test_a_plain_transformers_base_takes_the_tuned_models_pooling(tiny_bert_dir, two_models, tmp_path):
    tuned = Encoder.load(two_models[1], pooling="cls_before_pooler")
    tuned.save(tmp_path / "simcse")
    out = merge_folders(tiny_bert_dir, tmp_path / "simcse", 0.0, tmp_path / "merged")
    merged = Encoder.load(out, device="cpu")
    assert merged.pooling == "cls_before_pooler"
    want = Encoder.load(tiny_bert_dir, device="cpu").state_dict()
    assert all(torch.equal(merged.state_dict()[k], want[k]) for k in want)
