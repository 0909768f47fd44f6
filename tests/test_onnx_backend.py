"""The ONNX Runtime backend: same embeddings as torch, one export per model folder, clear refusals."""
from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from textcl.models import Encoder
from textcl.models import onnx_backend as ob

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnxruntime", "onnx", "onnxscript")),
    reason="the textcl[onnx] extra (onnxruntime, onnx, onnxscript) is not installed",
)]

TEXTS = ["the cat sat on the mat", "a dog", "the man ran quickly to the woman and the dog sat", "it"] * 3


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One export cache for the module: each export takes seconds, so tests share the first one."""
    path = tmp_path_factory.mktemp("textcl-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TEXTCL_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def st_folder(tiny_bert_dir, tmp_path_factory):
    """The tiny BERT saved as a sentence-transformers folder (mean pooling, normalised)."""
    out = tmp_path_factory.mktemp("tiny-st")
    Encoder.load(tiny_bert_dir, device="cpu").save(out)
    return out


def test_onnx_embeddings_equal_torch(st_folder, cache):
    torch_enc = Encoder.load(st_folder, device="cpu")
    onnx_enc = Encoder.load(st_folder, device="cpu", backend="onnx")
    assert (torch_enc.backend, onnx_enc.backend) == ("torch", "onnx")
    a = torch_enc.encode(TEXTS, batch_size=5)
    b = onnx_enc.encode(TEXTS, batch_size=5)
    assert a.shape == b.shape == (len(TEXTS), torch_enc.dim)
    np.testing.assert_allclose(b, a, atol=1e-5)
    calls = []
    session = onnx_enc._onnx
    onnx_enc._onnx = lambda features: calls.append(1) or session(features)
    np.testing.assert_allclose(onnx_enc.encode(TEXTS, batch_size=5), a, atol=1e-5)  # a second call: still onnx
    assert onnx_enc.backend == "onnx" and len(calls) == 3  # 12 texts in batches of 5
    # one export, in the cache, keyed by the folder
    assert len(list(cache.glob("onnx/*/model.onnx"))) == 1


def test_export_is_reused_and_a_changed_model_is_exported_again(st_folder, cache, tmp_path, capsys):
    Encoder.load(st_folder, device="cpu", backend="onnx")
    capsys.readouterr()
    Encoder.load(st_folder, device="cpu", backend="onnx")
    assert "exporting" not in capsys.readouterr().err  # the cached export is used
    moved = tmp_path / "copy"
    shutil.copytree(st_folder, moved)
    Encoder.load(moved, device="cpu", backend="onnx")  # another folder (weights may differ): its own export
    assert "exporting" in capsys.readouterr().err  # standard error: standard output may be a command's JSON
    assert len(list(cache.glob("onnx/*/model.onnx"))) == 2


def test_a_folder_with_its_own_onnx_export_is_used_as_it_is(st_folder, cache, tmp_path, capsys):
    own = tmp_path / "with-onnx"
    shutil.copytree(st_folder, own)
    enc = Encoder.load(own, device="cpu")
    ob.export(enc.model, enc.tokenizer, own / ob.ONNX_FILE)  # the layout sentence-transformers writes
    capsys.readouterr()
    onnx_enc = Encoder.load(own, device="cpu", backend="onnx")
    assert "exporting" not in capsys.readouterr().err
    assert onnx_enc._onnx.path == own / ob.ONNX_FILE
    np.testing.assert_allclose(onnx_enc.encode(TEXTS), enc.encode(TEXTS), atol=1e-5)


def test_training_switches_back_to_torch(st_folder, cache):
    enc = Encoder.load(st_folder, device="cpu", backend="onnx")
    enc.train()
    assert enc.backend == "torch"


def test_auto_uses_onnx_where_it_measured_faster_and_torch_otherwise(st_folder, cache, monkeypatch):
    """``auto`` used to mean "onnx whenever onnxruntime is installed", which picked the slower backend on an AVX2
    CPU (0.93x torch, benchmarks/RESULTS.md); it now follows a measurement (tests/test_backend_auto.py), faked
    here so that each outcome is certain."""
    from textcl.models import backend_choice, calibration

    for ratio, expected in ((0.5, "onnx"), (2.0, "torch")):
        monkeypatch.setattr(calibration, "_DECIDED", {})
        shutil.rmtree(calibration.cache_dir(), ignore_errors=True)  # measured anew (the exports stay)
        monkeypatch.setattr(backend_choice, "backend_probe", lambda model, session, ratio=ratio, **kw: {
            "torch_s": 1.0, "onnx_s": ratio, "onnx_over_torch": ratio, "spread": 0.01})
        assert Encoder.load(st_folder, device="cpu", backend="auto").backend == expected
    assert Encoder.load(st_folder, device="cpu", backend="auto", pooling="first_last_avg").backend == "torch"


def test_bad_backends_are_refused_with_the_reason(st_folder, cache):
    with pytest.raises(ValueError, match="backend: expected torch, onnx or auto, got 'tensorrt'"):
        Encoder.load(st_folder, device="cpu", backend="tensorrt")
    with pytest.raises(ob.BackendUnavailable, match="pooling 'first_last_avg' reads more than the last hidden"):
        Encoder.load(st_folder, device="cpu", backend="onnx", pooling="first_last_avg")


def test_onnx_file_with_unexpected_inputs_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixels"], ["last_hidden_state"])], "g",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ob.BackendUnavailable, match=r"unexpected ONNX inputs \['pixels'\]"):
        ob.OnnxTransformer(path)


def test_encode_command_gives_the_same_vectors_with_either_backend(st_folder, cache, tmp_path):
    from textcl.cli import main

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    for backend in ("torch", "onnx"):
        assert main(["encode", "--model", str(st_folder), "--input", str(texts), "--out",
                     str(tmp_path / f"{backend}.npy"), "--backend", backend]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "onnx.npy"), np.load(tmp_path / "torch.npy"), atol=1e-5)


def test_a_bad_backend_in_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("TEXTCL_BACKEND", "gpu")
    with pytest.raises(ValueError, match="TEXTCL_BACKEND: expected one of auto, torch, onnx, got 'gpu'"):
        ob.resolve_backend(None)
