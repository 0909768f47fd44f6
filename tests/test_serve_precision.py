"""``textcl serve --precision``: auto takes bf16 only where it measured faster on this machine and its vectors
agree with fp32's; an explicit setting wins; what a model encodes in is shown and given back at shutdown."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from test_serve_embeddings_support import embed_client, wide_encoder, wide_model_dir  # noqa: F401
from test_serve_support import index_dir, local_client, serve_encoder, serve_model_dir  # noqa: F401
from textcl.errors import ConfigError
from textcl.models import calibration
from textcl.models.encode_precision import MIN_COSINE, choose_encode_precision, encoder_shape, probe_texts
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
                                     agreement=lambda: cosine)
    assert (choice.resolved, choice.bf16_over_fp32, choice.min_cosine, calls) == (
        expected, pytest.approx(bf16_s / fp32_s), cosine, ["probe"])
    assert len(list(fresh_cache.glob("precision-*.json"))) == 1
    calibration._DECIDED.clear()  # a new process reads the cache: no second measurement
    again = choose_encode_precision(wide_encoder, "auto", probe=timed(1, 9, calls), agreement=lambda: cosine)
    assert (again.resolved, again.cached, calls) == (expected, True, ["probe"])


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


def test_the_agreement_is_measured_on_the_model_itself(wide_encoder):
    texts = probe_texts()
    full = wide_encoder.encode(texts, bf16=False)
    half = wide_encoder.encode(texts, bf16=True)
    from textcl.models.encode_precision import bf16_agreement

    assert bf16_agreement(wide_encoder) == pytest.approx(float(np.min(np.sum(full * half, axis=1))), abs=1e-7)
    assert len(texts) == 8 and len(texts[-1].split()) == 320  # past the model's limit: truncated rows too


def test_the_measurement_is_cached_by_the_model_s_shape(wide_encoder, serve_encoder):
    a, b = encoder_shape(wide_encoder), encoder_shape(serve_encoder)
    assert a["measure"] == "encode" and a["hidden_size"] == wide_encoder.model.config.hidden_size
    assert a != b


def test_a_bad_precision_names_the_flag():
    with pytest.raises(ConfigError, match=r"--precision: expected one of auto, fp32, bf16, got 'fp16'"):
        ServeConfig(models=["m"], precision="fp16").validate()


def test_bf16_on_the_onnx_backend_is_refused(wide_encoder, monkeypatch):
    monkeypatch.setattr(type(wide_encoder), "backend", property(lambda self: "onnx"))
    with pytest.raises(ConfigError, match="--precision: bf16 runs on the torch backend; this model runs on onnx"):
        choose_encode_precision(wide_encoder, "bf16")
    assert choose_encode_precision(wide_encoder, "auto").resolved == "no"


# ---------------------------------------------------------------- served
def test_a_bf16_server_gives_what_encode_gives_in_bf16_and_gives_the_encoder_back(embed_client, wide_encoder):
    assert wide_encoder.encode_bf16 is False
    client = embed_client(precision="bf16")
    assert client.get("/v1/models/wide").json()["precision"] == "bf16"
    got = np.array([d["embedding"] for d in client.post("/v1/embeddings", json={"input": TEXTS, "model": "wide"})
                    .json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, wide_encoder.encode(TEXTS, bf16=True), atol=1e-6)
    assert not np.allclose(got, wide_encoder.encode(TEXTS, bf16=False), atol=1e-6)  # bf16 really ran
    client.__exit__(None, None, None)
    assert wide_encoder.encode_bf16 is False  # the caller's encoder, as it was


def test_an_fp32_server_gives_fp32_vectors(embed_client, wide_encoder):
    client = embed_client(precision="fp32")
    assert client.get("/v1/models/wide").json()["precision"] == "fp32"
    got = np.array([d["embedding"] for d in client.post("/v1/embeddings", json={"input": TEXTS, "model": "wide"})
                    .json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, wide_encoder.encode(TEXTS, bf16=False), atol=1e-6)


def test_the_index_server_shows_its_precision_and_its_searches_run_in_it(index_dir, serve_encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without bf16 instructions warns
        app = create_app(index_dir, encoder=serve_encoder, precision="bf16", models=["m=unused"],
                         encoders={"m": serve_encoder})
    with local_client(app) as client:
        assert client.get("/info").json()["precision"] == "bf16"
        assert client.get("/v1/models/m").json()["precision"] == "bf16"
        assert serve_encoder.encode_bf16 is True
    assert serve_encoder.encode_bf16 is False
