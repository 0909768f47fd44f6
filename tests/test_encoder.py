"""Encoder: encode() contract, bad input, and the sentence-transformers round trip."""
import json
import time

import numpy as np
import pytest
import torch

from textcl.errors import ModelNotFoundError
from textcl.models import Encoder, POOLING_MODES

TEXTS = ["A man is playing a guitar.", "", "cat", "The quick brown fox jumps over the lazy dog near the river bank.",
         "Ein Mann spielt Gitarre.", "日本語のテキスト", "emoji 🙂 text"]


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    return Encoder.load(tiny_bert_dir)


def test_plain_hf_folder_defaults_to_mean_and_normalised(encoder):
    assert encoder.pooling == "mean" and encoder.normalize and encoder.dim == 32


def test_encode_shape_dtype_and_unit_norm(encoder):
    emb = encoder.encode(TEXTS, batch_size=3)
    assert emb.shape == (len(TEXTS), 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_length_sorted_batching_matches_one_at_a_time(encoder):
    batched = encoder.encode(TEXTS, batch_size=4)
    single = np.stack([encoder.encode([t], batch_size=1)[0] for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_single_string_gives_a_vector(encoder):
    assert encoder.encode("cat").shape == (32,)


def test_empty_list_gives_empty_matrix(encoder):
    out = encoder.encode([])
    assert out.shape == (0, 32) and out.dtype == np.float32


def test_empty_string_is_encoded(encoder):
    out = encoder.encode([""])
    assert np.isfinite(out).all() and abs(np.linalg.norm(out) - 1.0) < 1e-5


@pytest.mark.parametrize("bad, index, kind", [(["a", None], 1, "NoneType"), (["a", "b", 3], 2, "int")])
def test_non_string_names_its_index(encoder, bad, index, kind):
    with pytest.raises(TypeError, match=rf"texts\[{index}\] is {kind}, expected str"):
        encoder.encode(bad)


def test_encode_restores_training_mode(encoder):
    encoder.train()
    encoder.encode(["x"])
    assert encoder.training
    encoder.eval()


def test_mlp_head_is_used_in_training_only(tiny_bert_dir, tmp_path):
    enc = Encoder.load(tiny_bert_dir, pooling="cls_before_pooler", mlp_head=True)
    feats = enc.tokenize(["a cat"])
    torch.manual_seed(0)
    enc.eval()
    plain = enc(feats)
    enc.train()
    enc.model.eval()  # no dropout: the only difference left is the head
    with_head = enc(feats)
    assert not torch.allclose(plain, with_head)
    torch.testing.assert_close(with_head, enc.mlp(plain))
    enc.eval()
    enc.save(tmp_path / "m")
    modules = json.loads((tmp_path / "m" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]


@pytest.mark.parametrize("pooling", POOLING_MODES)
def test_sentence_transformers_round_trip(tiny_bert_dir, tmp_path, pooling):
    from sentence_transformers import SentenceTransformer

    enc = Encoder.load(tiny_bert_dir, pooling=pooling)
    enc.save(tmp_path / "st")
    ours = Encoder.load(tmp_path / "st").encode(TEXTS)
    theirs = SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(TEXTS)
    assert np.abs(ours - theirs).max() <= 1e-5
    np.testing.assert_allclose(ours, enc.encode(TEXTS), atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "cls_before_pooler", "max"])
def test_a_folder_saved_by_sentence_transformers_loads_with_its_pooling_and_length(tiny_bert_dir, tmp_path, pooling):
    """The installed sentence-transformers' own save format (6.x: ``"pooling_mode": "mean"`` and the length in
    the tokenizer's ``model_max_length``) loads in textcl with the same vectors."""
    from sentence_transformers import SentenceTransformer

    Encoder.load(tiny_bert_dir, pooling=pooling).save(tmp_path / "ours")
    st = SentenceTransformer(str(tmp_path / "ours"), device="cpu")
    st.max_seq_length = 24
    st.save(str(tmp_path / "theirs"))
    enc = Encoder.load(tmp_path / "theirs")
    assert enc.pooling == pooling and enc.max_seq_length == 24
    assert np.abs(enc.encode(TEXTS) - st.encode(TEXTS)).max() <= 1e-5


def test_save_replaces_an_existing_folder_whole(tiny_bert_dir, tmp_path):
    enc = Encoder.load(tiny_bert_dir)
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    enc.save(target)
    assert not (target / "stale.txt").exists() and (target / "modules.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_missing_local_folder_is_named():
    with pytest.raises(ModelNotFoundError, match="model folder './no/such/model' does not exist"):
        Encoder.load("./no/such/model")


def test_unresolvable_name_lists_what_was_tried(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from textcl import hub

    hub.hub_reachable.cache_clear()
    with pytest.raises(ModelNotFoundError) as err:
        Encoder.load("nobody/no-such-model")
    msg = str(err.value)
    for part in ("local folder 'nobody/no-such-model'", "Hugging Face cache", "unreachable", "packaged copy"):
        assert part in msg
    hub.hub_reachable.cache_clear()


def test_unreachable_hub_is_detected_quickly(monkeypatch):
    from textcl import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    hub.hub_reachable.cache_clear()
    start = time.monotonic()
    assert hub.hub_reachable() is False
    assert time.monotonic() - start < hub.PROBE_TIMEOUT_S + 0.5
    hub.hub_reachable.cache_clear()


def test_unsupported_st_module_is_named(tiny_bert_dir, tmp_path):
    enc = Encoder.load(tiny_bert_dir)
    enc.save(tmp_path / "st")
    modules = json.loads((tmp_path / "st" / "modules.json").read_text())
    modules.insert(2, {"idx": 9, "name": "9", "path": "x", "type": "sentence_transformers.models.LSTM"})
    (tmp_path / "st" / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelNotFoundError, match="module type 'sentence_transformers.models.LSTM' is not supported"):
        Encoder.load(tmp_path / "st")


def test_encode_dim_keeps_the_first_dimensions_renormalised(encoder):
    full = encoder.encode(TEXTS, normalize=False)
    cut = encoder.encode(TEXTS, dim=8)
    assert cut.shape == (len(TEXTS), 8)
    np.testing.assert_allclose(cut, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-6)
    encoder.truncate_dim = 8
    try:
        np.testing.assert_array_equal(encoder.encode(TEXTS), cut)
    finally:
        encoder.truncate_dim = None
    for bad in (0, encoder.dim + 1, 2.5):
        with pytest.raises(ValueError, match=rf"dim: expected an integer from 1 to the embedding dimension {encoder.dim}"):
            encoder.encode(TEXTS, dim=bad)


def test_a_half_precision_checkpoint_loads_as_float32_weights(tiny_bert_dir, tmp_path):
    """transformers' dtype "auto" keeps an fp16 checkpoint's dtype; textcl trains and encodes fp32 weights, so a
    folder saved in fp16 (as benchmarks/gpu_prepare.py carries MiniLM) must come back as float32."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from textcl.models import Encoder

    half = tmp_path / "half"
    shutil.copytree(tiny_bert_dir, half)
    (weights,) = half.glob("*.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}, str(weights),
              metadata={"format": "pt"})
    encoder = Encoder.load(half)
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    full = Encoder.load(tiny_bert_dir)
    a, b = encoder.encode(["a cat sat on the mat"]), full.encode(["a cat sat on the mat"])
    assert float((a * b).sum()) > 0.999  # the same model, up to fp16 rounding of its weights


def test_cuda_attention_runs_without_the_cudnn_backend():
    """cuDNN's attention plans each new shape (3.2x slower training on an H200, benchmarks/RESULTS.md "GPU"):
    on CUDA, embed runs under flash / memory-efficient / math only; elsewhere nothing changes."""
    import contextlib

    import torch

    from textcl.models.encoder import _attention_kernels

    assert isinstance(_attention_kernels(torch.device("cpu")), contextlib.nullcontext)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with _attention_kernels(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before


def test_the_gpu_chunk_cost_is_the_measured_default_not_a_small_batch_probe(tiny_bert_dir, monkeypatch):
    from textcl.models import Encoder
    from textcl.models.chunking import CHUNK_OVERHEAD_TOKENS, measured_chunk_overhead

    encoder = Encoder.load(tiny_bert_dir)
    monkeypatch.setattr(type(encoder), "device", property(lambda self: __import__("torch").device("cuda")))
    tokens, entry = measured_chunk_overhead(encoder)
    assert tokens == CHUNK_OVERHEAD_TOKENS["cuda"] == 65536 and entry["values"] == {}
