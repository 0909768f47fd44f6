"""``textcl serve --precision``: auto takes bf16 only where it measured faster on this machine and its vectors
agree with fp32's; an explicit setting wins; what a model encodes in is shown and given back at shutdown."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from test_serve_embeddings_support import embed_client, wide_encoder, wide_model_dir  # noqa: F401
from test_serve_support import index_dir, local_client, serve_encoder, serve_model_dir  # noqa: F401
from textcl.errors import ConfigError
from textcl.models import calibration
from textcl.models.encode_precision import (MIN_COSINE, bf16_agreement, bf16_copy, choose_encode_precision,
                                           encoder_shape, in_precision, probe_texts)
from textcl.serve import ServeConfig, create_app

TEXTS = ["the cat sat on the mat", "a dog ran quickly", "the man and the woman"]


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    """An empty calibration cache, as on a machine that never measured (and a new process)."""
    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path))
    monkeypatch.setattr(calibration, "_DECIDED", {})
    return tmp_path / "calibration"


def timed(fp32_s: float, bf16_s: float, calls: list):
    def probe():
        calls.append("probe")
        return {"fp32_s": fp32_s, "bf16_s": bf16_s, "bf16_over_fp32": bf16_s / fp32_s}
    return probe


@pytest.mark.parametrize("fp32_s, bf16_s, cosine, expected", [
    (1.0, 0.6, 0.99999, "bf16"),   # faster and the same vectors
    (1.0, 3.5, 0.99999, "no"),     # emulated bf16: slower
    (1.0, 0.97, 0.99999, "no"),    # under 5% faster: not worth the rounding
    (1.0, 0.6, 0.9990, "no"),      # faster, but the vectors differ: fp32
])
def test_auto_takes_bf16_only_where_it_measured_faster_and_agrees(fresh_cache, wide_encoder, fp32_s, bf16_s, cosine,
                                                                  expected):
    calls = []
    choice = choose_encode_precision(wide_encoder, "auto", probe=timed(fp32_s, bf16_s, calls),
                                     agreement=lambda: calls.append("agreement") or cosine)
    faster = bf16_s / fp32_s <= 0.95  # the vectors are compared only where bf16 measured faster
    assert (choice.resolved, choice.bf16_over_fp32, choice.min_cosine, calls) == (
        expected, pytest.approx(bf16_s / fp32_s), cosine if faster else None,
        ["probe", "agreement"] if faster else ["probe"])
    calls.clear()
    assert len(list(fresh_cache.glob("precision-*.json"))) == 1
    calibration._DECIDED.clear()  # a new process reads the cache: no second measurement
    again = choose_encode_precision(wide_encoder, "auto", probe=timed(1, 9, calls), agreement=lambda: cosine)
    assert (again.resolved, again.cached, calls) == (expected, True, [])


def test_the_line_says_what_was_measured(fresh_cache, wide_encoder):
    choice = choose_encode_precision(wide_encoder, "auto", probe=timed(1.0, 0.5, []), agreement=lambda: 0.999987)
    assert choice.line() == ("precision auto -> bf16: bf16 measured 2.00x faster than fp32 on this CPU; bf16 vectors' "
                             "smallest cosine to fp32's 0.999987")
    assert choice.to_dict()["min_cosine"] == 0.999987


def test_fp32_is_kept_without_measuring(fresh_cache, wide_encoder):
    calls = []
    choice = choose_encode_precision(wide_encoder, "fp32", probe=timed(1, 0.1, calls),
                                     agreement=lambda: calls.append("agreement") or 1.0)
    assert (choice.resolved, calls) == ("no", []) and not fresh_cache.exists()


def test_explicit_bf16_whose_vectors_differ_warns(fresh_cache, wide_encoder):
    with pytest.warns(RuntimeWarning, match=r"bf16 vectors differ from its fp32 ones \(smallest cosine 0\.990000"):
        choice = choose_encode_precision(wide_encoder, "bf16", agreement=lambda: 0.99)
    assert choice.resolved == "bf16"


def test_a_measurement_disturbed_by_other_work_serves_fp32_and_is_not_cached(fresh_cache, wide_encoder, monkeypatch):
    monkeypatch.setattr(calibration, "_others_share", lambda probe: (probe(), 0.9))  # others took 90% of the CPU
    choice = choose_encode_precision(wide_encoder, "auto", probe=timed(1.0, 0.5, []), agreement=lambda: 1.0)
    assert (choice.resolved, choice.disturbed) == ("no", True) and not list(fresh_cache.glob("precision-*.json"))


def test_a_server_whose_measurement_was_disturbed_warns_that_it_serves_fp32(fresh_cache, wide_encoder, monkeypatch,
                                                                           caplog):
    from textcl.models import encode_precision
    from textcl.serve.precision import served

    monkeypatch.setattr(calibration, "_others_share", lambda probe: (probe(), 0.9))
    monkeypatch.setattr(encode_precision, "encode_probe", lambda encoder, half=None: timed(1.0, 0.5, [])())
    with caplog.at_level("WARNING", logger="textcl.serve"):
        out = served(wide_encoder, ServeConfig(models=("wide=x",)), "wide=x", "model 'wide'")
    assert out.precision == "fp32"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "model 'wide': precision auto -> fp32: the measurement (bf16 2.00x faster) was disturbed by other work on this "
        "CPU, so fp32 is served; measured again next run (or pass --precision bf16)"]


class Scaled:
    """A stand-in bf16 copy whose vectors are ``encoder``'s times ``factor``: the same directions, longer."""

    def __init__(self, encoder, factor):
        self.encoder, self.factor = encoder, factor

    def encode(self, texts, **kwargs):
        return self.encoder.encode(texts, **kwargs) * self.factor


def test_agreement_counts_the_vectors_lengths_where_the_encoder_does_not_normalise(wide_encoder, monkeypatch):
    assert bf16_agreement(wide_encoder, TEXTS, half=Scaled(wide_encoder, 1.01)) == pytest.approx(1.0, abs=1e-6)
    monkeypatch.setattr(wide_encoder, "normalize", False)  # dot scores now move with the lengths
    assert bf16_agreement(wide_encoder, TEXTS, half=Scaled(wide_encoder, 1.01)) == pytest.approx(1 / 1.01, abs=1e-6)


def test_the_bf16_copy_holds_the_weights_cast_once(wide_encoder):
    half = bf16_copy(wide_encoder)
    full, cast = dict(wide_encoder.named_parameters()), dict(half.named_parameters())
    assert full.keys() == cast.keys() and half.tokenizer is wide_encoder.tokenizer
    assert all(cast[k].dtype == torch.bfloat16 and torch.equal(cast[k], v.detach().to(torch.bfloat16))
               and v.dtype == torch.float32 for k, v in full.items())


def test_the_bf16_copy_reads_the_model_folder_s_prompts_once(wide_encoder, monkeypatch):
    from textcl.models import prompts

    served = in_precision(wide_encoder, "bf16", agreement=lambda: 1.0)
    monkeypatch.setattr(wide_encoder, "prompts", None)  # as an encoder whose folder was never read
    reads = []
    real = prompts.read_prompts
    monkeypatch.setattr(prompts, "read_prompts", lambda folder: reads.append(folder) or real(folder))
    for _ in range(3):
        served.encode(TEXTS[:1])
    assert len(reads) == 1 and served._half.prompts == wide_encoder.prompts


def test_the_probe_reaches_past_the_model_s_limit(wide_encoder):
    texts = probe_texts(wide_encoder)
    assert len(texts) == 8 and len(texts[0].split()) == 4
    assert len(texts[-1].split()) == max(320, wide_encoder.max_seq_length + 8)
    assert len(wide_encoder.tokenizer(texts[-1])["input_ids"]) > wide_encoder.max_seq_length
    big = type("Big", (), {"max_seq_length": 8192})()
    assert len(probe_texts(big)[-1].split()) == 8200


def test_the_measurement_is_cached_by_the_model_s_shape(wide_encoder, serve_encoder):
    a, b = encoder_shape(wide_encoder), encoder_shape(serve_encoder)
    assert a["measure"] == "encode-bf16-weights" and a["hidden_size"] == wide_encoder.model.config.hidden_size
    assert a != b


def test_a_bad_precision_names_the_flag():
    with pytest.raises(ConfigError, match=r"--precision: expected one of auto, fp32, bf16, got 'fp16'"):
        ServeConfig(models=["m"], precision="fp16").validate()


def test_bf16_on_the_onnx_backend_is_refused(wide_encoder, monkeypatch):
    with pytest.raises(ConfigError, match="--precision: bf16 runs on the torch backend, not onnx"):
        ServeConfig(models=["m"], precision="bf16", backend="onnx").validate()
    monkeypatch.setattr(type(wide_encoder), "backend", property(lambda self: "onnx"))
    with pytest.raises(ConfigError, match="--precision: bf16 runs on a textcl model on the torch backend; this "
                                          "model runs on onnx"):
        choose_encode_precision(wide_encoder, "bf16")
    assert choose_encode_precision(wide_encoder, "auto").resolved == "no"


def test_an_encoder_textcl_cannot_set_is_served_as_it_is():
    from textcl.models.encode_precision import in_precision

    class Remote:  # e.g. a RemoteEncoder: no device, no encode_bf16
        def encode(self, texts, batch_size=64):
            return np.ones((len(texts), 4), np.float32)

    remote = Remote()
    assert in_precision(remote, "auto") is remote and in_precision(remote, "fp32") is remote


# ---------------------------------------------------------------- served
def test_a_bf16_server_gives_what_the_bf16_copy_gives_and_leaves_the_encoder_fp32(embed_client, wide_encoder):
    weights = {k: v.clone() for k, v in wide_encoder.state_dict().items()}
    client = embed_client(precision="bf16")
    assert client.get("/v1/models/wide").json()["precision"] == "bf16"
    got = np.array([d["embedding"] for d in client.post("/v1/embeddings", json={"input": TEXTS, "model": "wide"})
                    .json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, bf16_copy(wide_encoder).encode(TEXTS), atol=1e-6)
    assert not np.allclose(got, wide_encoder.encode(TEXTS, bf16=False), atol=1e-6)  # bf16 really ran
    assert wide_encoder.encode_bf16 is False  # the caller's encoder is never changed, even while served
    assert all(v.dtype == torch.float32 and torch.equal(v, weights[k]) for k, v in wide_encoder.state_dict().items())


def test_the_bf16_copy_follows_the_encoder_s_settings(wide_encoder):
    served = in_precision(wide_encoder, "bf16", agreement=lambda: 1.0)
    assert next(served.wrapped.parameters()).dtype == torch.float32
    wide_encoder.truncate_dim = 8  # set after the copy was made
    try:
        got = served.encode(TEXTS)
        assert got.shape == (3, 8)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(served.encode(TEXTS, bf16=False), wide_encoder.encode(TEXTS), atol=1e-6)
    finally:
        wide_encoder.truncate_dim = None


def test_two_apps_serving_one_encoder_each_keep_their_precision(embed_client, wide_encoder):
    full, half = embed_client(precision="fp32"), embed_client(precision="bf16")  # the later app must not win

    def served(client):
        return np.array([d["embedding"] for d in client.post("/v1/embeddings", json={"input": TEXTS}).json()["data"]],
                        dtype=np.float32)

    np.testing.assert_allclose(served(full), wide_encoder.encode(TEXTS, bf16=False), atol=1e-6)
    half.__exit__(None, None, None)  # one app stopping changes nothing for the other
    np.testing.assert_allclose(served(full), wide_encoder.encode(TEXTS, bf16=False), atol=1e-6)
    assert full.get("/v1/models/wide").json()["precision"] == "fp32"


def test_an_fp32_server_gives_fp32_vectors(embed_client, wide_encoder):
    client = embed_client(precision="fp32")
    assert client.get("/v1/models/wide").json()["precision"] == "fp32"
    got = np.array([d["embedding"] for d in client.post("/v1/embeddings", json={"input": TEXTS, "model": "wide"})
                    .json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, wide_encoder.encode(TEXTS, bf16=False), atol=1e-6)


def test_the_index_server_searches_in_its_precision(index_dir, serve_encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without bf16 instructions warns
        app = create_app(index_dir, encoder=serve_encoder, precision="bf16")
    with local_client(app) as client:
        assert client.get("/info").json()["precision"] == "bf16"
        hits = client.post("/search", json={"queries": ["the cat sat on the mat"], "k": 2}).json()["results"][0]["hits"]
    from textcl.index import SearchIndex

    index = SearchIndex.load(index_dir)
    half, _ = index.search_vectors(bf16_copy(serve_encoder).encode(["the cat sat on the mat"]), k=2)
    full, _ = index.search_vectors(serve_encoder.encode(["the cat sat on the mat"], bf16=False), k=2)
    served = np.array([h["score"] for h in hits], np.float32)
    np.testing.assert_allclose(served, half[0], rtol=0, atol=1e-6)
    assert not np.allclose(served, full[0], rtol=0, atol=1e-6)  # the query was encoded in bf16
    assert serve_encoder.encode_bf16 is False
