"""benchmarks/bench_merge.py: the merges it scores are the ones named, and its cache never reports one model's
scores as another's."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_merge  # noqa: E402


def _state():
    return {"model.embeddings.word_embeddings.weight": torch.tensor([1.0, 2.0]),
            "model.encoder.layer.0.output.dense.weight": torch.tensor([1.0, 2.0]),
            "model.encoder.layer.1.output.dense.weight": torch.tensor([1.0, 2.0]),
            "model.pooler.dense.weight": torch.tensor([1.0, 2.0]),
            "model.embeddings.position_ids": torch.tensor([0, 1])}


def test_soup_adds_both_task_vectors_by_hand():
    base, tuned, second = _state(), _state(), _state()
    for k in base:
        if base[k].is_floating_point():
            tuned[k] = torch.tensor([3.0, 2.0])
            second[k] = torch.tensor([1.0, 6.0])
    out = bench_merge.merged_state(base, tuned, "soup-0.5-0.25", 2, second)
    # 1 + 0.5 * (3 - 1) + 0.25 * (1 - 1) = 2; 2 + 0.5 * 0 + 0.25 * (6 - 2) = 3
    assert torch.equal(out["model.encoder.layer.1.output.dense.weight"], torch.tensor([2.0, 3.0]))
    assert torch.equal(out["model.embeddings.position_ids"], torch.tensor([0, 1]))


def test_depth_schemes_put_each_tensor_at_its_layer():
    keys = list(_state())
    alphas = {k: bench_merge.alpha_of("keep-lower-1", k, 2) for k in keys}
    assert alphas == {keys[0]: 0.0, keys[1]: 0.0, keys[2]: 1.0, keys[3]: 1.0, keys[4]: 0.0}
    assert bench_merge.alpha_of("ramp-0.5", keys[1], 2) == 0.5
    assert bench_merge.alpha_of("ramp-0.5", keys[2], 2) == 1.0


@pytest.mark.parametrize("scheme, message", [
    ("uniform-2.0", "outside [0, 1]"),
    ("uniform-.5", "write '.5' as 0.5"),
    ("ramp-x", "'x' is not a number"),
    ("keep-lower-0", "keep-lower-0 is keep-embeddings"),
    ("keep-lower-6", "from 1 to 5"),
    ("soup-..-1.0", "'..' is not a number"),
    ("soup-0.5-1.5", "outside [0, 1]"),
    ("shuffle", "unknown scheme 'shuffle'"),
])
def test_a_scheme_out_of_range_or_misspelt_is_refused(scheme, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")):
        bench_merge.check_scheme(scheme, 6)


def test_two_runs_under_the_same_folder_names_never_share_a_cache(tmp_path):
    a, b, same = (tmp_path / x / "run-recipe" / "model" for x in ("a", "b", "c"))
    for folder, payload in ((a, b"weights one"), (b, b"weights two"), (same, b"weights one")):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(payload)
    assert bench_merge.cache_dir(a) != bench_merge.cache_dir(b)
    assert bench_merge.cache_dir(a) == bench_merge.cache_dir(same)
    (a / "model.safetensors").write_bytes(b"retrained in place")
    assert bench_merge.cache_dir(a) != bench_merge.cache_dir(same)


def test_every_listed_scheme_is_accepted():
    for scheme in bench_merge.SCHEMES:
        bench_merge.check_scheme(scheme, bench_merge.LAYERS)


@pytest.mark.parametrize("scheme, message", [("uniform-0.0", "is start"), ("ramp-1.0", "is keep-embeddings"),
                                             ("soup-0.5-0.0", "a uniform merge of one run")])
def test_another_name_for_a_listed_merge_is_refused(scheme, message):
    with pytest.raises(ValueError, match=message):
        bench_merge.check_scheme(scheme, 6)


def test_the_cache_key_covers_the_folder_but_its_model_card(tmp_path):
    folder = tmp_path / "run" / "model"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    key = bench_merge.cache_dir(folder)
    (folder / "README.md").write_text("a model card")
    assert bench_merge.cache_dir(folder) == key
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 256}')
    assert bench_merge.cache_dir(folder) != key


def test_a_folder_without_weights_is_refused_by_name(tmp_path):
    with pytest.raises(SystemExit, match=f"{tmp_path}: no weight file"):
        bench_merge.cache_dir(tmp_path)


def test_a_run_that_is_not_the_starts_architecture_is_refused_before_scoring(tiny_bert_dir, tmp_path, monkeypatch):
    from textcl.models import Encoder
    from textcl.models.merge import MergeMismatch

    base = Encoder.load(tiny_bert_dir, device="cpu")
    base.save(tmp_path / "start")
    Encoder.load(tmp_path / "start", pooling="cls_before_pooler").save(tmp_path / "cls" / "model")
    monkeypatch.setattr(bench_merge, "BASE", str(tmp_path / "start"))
    monkeypatch.setattr(bench_merge, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(bench_merge, "score", lambda enc: pytest.fail("scored a model it should have refused"))
    with pytest.raises(MergeMismatch, match="pooling"):
        bench_merge.run(["uniform-0.5"], tmp_path / "cls" / "model")
    with pytest.raises(MergeMismatch, match="pooling"):
        bench_merge.run(["soup-0.5-0.5"], tmp_path / "start", tmp_path / "cls" / "model")
