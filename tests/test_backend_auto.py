"""``--backend auto``: decided by measuring ONNX Runtime against torch on this machine (cached per machine, device,
versions, threads and model shape), never by "onnxruntime is installed"; an explicit backend always wins."""
from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from textcl.cli import main
from textcl.models import Encoder, backend_choice, calibration
from textcl.models import onnx_backend as ob

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnxruntime", "onnx", "onnxscript")),
    reason="the textcl[onnx] extra (onnxruntime, onnx, onnxscript) is not installed",
)]

TEXTS = ["the cat sat on the mat", "a dog", "the man ran quickly to the woman and the dog sat", "it"]


@pytest.fixture(scope="module")
def st_folder(tiny_bert_dir, tmp_path_factory):
    """The tiny BERT as a sentence-transformers folder with its own ``onnx/model.onnx``: every test gets a fresh
    measurement cache, and none pays for an export."""
    out = tmp_path_factory.mktemp("tiny-st-onnx")
    enc = Encoder.load(tiny_bert_dir, device="cpu")
    enc.save(out)
    ob.export(enc.model, enc.tokenizer, out / ob.ONNX_FILE)
    return out


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    """A fresh measurement cache and a process that has printed no decision yet."""
    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(backend_choice, "_ANNOUNCED", set())
    return tmp_path / "cache" / "calibration"


def fake_probe(monkeypatch, onnx_over_torch: float, spread: float = 0.01) -> list:
    """Replace the real measurement with one that reports ``onnx_over_torch``; returns the list of its calls."""
    calls = []

    def probe(model, session, **kwargs):
        calls.append(model.config.hidden_size)
        return {"torch_s": 0.1, "onnx_s": 0.1 * onnx_over_torch, "onnx_over_torch": onnx_over_torch,
                "spread": spread}

    monkeypatch.setattr(backend_choice, "backend_probe", probe)
    return calls


def new_process(monkeypatch):
    """What a new process starts with: nothing measured, nothing printed (the cache files stay)."""
    monkeypatch.setattr(calibration, "_DECIDED", {})
    monkeypatch.setattr(backend_choice, "_ANNOUNCED", set())


@pytest.mark.parametrize("ratio, expected, line", [
    (0.8, "onnx", "backend auto -> onnx: onnx measured 1.25x faster on this CPU"),
    (1.08, "torch", "backend auto -> torch: onnx measured 1.08x slower on this CPU"),
    (0.97, "torch", "backend auto -> torch: onnx measured 1.03x faster on this CPU (under the 5% needed)"),
])
def test_auto_takes_what_measured_faster_prints_it_once_and_caches_it(st_folder, fresh, monkeypatch, capsys, ratio,
                                                                      expected, line):
    calls = fake_probe(monkeypatch, ratio)
    enc = Encoder.load(st_folder, device="cpu", backend="auto")
    assert (enc.backend, enc.backend_choice.resolved, enc.backend_choice.line(), calls) == (expected, expected,
                                                                                            line, [32])
    assert enc.backend_choice.to_dict() == {"requested": "auto", "resolved": expected, "onnx_over_torch": ratio,
                                            "cached": False, "disturbed": False, "reason": None}
    assert capsys.readouterr().err == f"textcl: {line}\n"
    (path,) = fresh.glob("backend-*.json")
    assert json.loads(path.read_text())["values"]["onnx_over_torch"] == ratio
    torch_vectors = Encoder.load(st_folder, device="cpu").encode(TEXTS)
    np.testing.assert_allclose(enc.encode(TEXTS), torch_vectors, atol=1e-5)  # either backend: the same vectors

    again = Encoder.load(st_folder, device="cpu", backend="auto")  # the same process: decided, not printed again
    assert (again.backend, len(calls), capsys.readouterr().err) == (expected, 1, "")
    new_process(monkeypatch)
    later = Encoder.load(st_folder, device="cpu", backend="auto")  # a later process: the cache answers
    assert (later.backend, later.backend_choice.cached, len(calls)) == (expected, True, 1)
    assert capsys.readouterr().err == f"textcl: {line} (cached)\n"


def test_the_cache_key_is_the_machine_versions_threads_and_model_shape(st_folder, fresh, monkeypatch):
    import onnxruntime

    calls = fake_probe(monkeypatch, 1.2)
    Encoder.load(st_folder, device="cpu", backend="auto")
    (path,) = fresh.glob("backend-*.json")
    entry = json.loads(path.read_text())
    vocab = Encoder.load(st_folder, device="cpu").model.config.vocab_size
    assert entry["shape"] == {"model_type": "bert", "hidden": 32, "layers": 2, "heads": 2, "intermediate": 64,
                              "vocab": vocab, "onnxruntime": onnxruntime.__version__}
    assert (entry["profile"]["device"], entry["profile"]["torch"]) == ("cpu", torch.__version__)
    assert entry["profile"]["threads"] == torch.get_num_threads()

    new_process(monkeypatch)
    Encoder.load(st_folder, device="cpu", backend="auto")
    assert len(calls) == 1  # the same key: read from the cache
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        new_process(monkeypatch)
        Encoder.load(st_folder, device="cpu", backend="auto")
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 2  # other threads, another measurement
    new_process(monkeypatch)
    monkeypatch.setattr(onnxruntime, "__version__", "0.0.1-another")
    Encoder.load(st_folder, device="cpu", backend="auto")
    assert len(calls) == 3  # another onnxruntime, another measurement
    from transformers import BertConfig, BertModel

    wider = Encoder(BertModel(BertConfig(vocab_size=vocab, hidden_size=48, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64)),
                    Encoder.load(st_folder, device="cpu").tokenizer)
    assert wider.use_backend("auto") == "torch"
    assert calls[-1] == 48 and len(list(fresh.glob("backend-*.json"))) == 4  # another shape, another entry


def test_a_disturbed_measurement_gives_torch_and_is_not_cached(st_folder, fresh, monkeypatch, capsys):
    """Rounds that disagree by 50% were measured beside other work: even a 2x faster onnx is not trusted; torch
    runs, nothing is cached, and the next process measures again."""
    calls = fake_probe(monkeypatch, 0.5, spread=0.5)
    enc = Encoder.load(st_folder, device="cpu", backend="auto")
    assert (enc.backend, enc.backend_choice.disturbed, enc.backend_choice.cached) == ("torch", True, False)
    assert capsys.readouterr().err == ("textcl: backend auto -> torch: the measurement (onnx 2.00x faster) was "
                                       "disturbed by other work on this CPU; measured again next run\n")
    assert not list(fresh.glob("backend-*.json"))
    Encoder.load(st_folder, device="cpu", backend="auto")
    assert len(calls) == 1  # one process keeps its first answer
    new_process(monkeypatch)
    Encoder.load(st_folder, device="cpu", backend="auto")
    assert len(calls) == 2


def test_other_processes_busy_during_the_measurement_give_torch(st_folder, fresh, monkeypatch):
    """Rounds that agree, but other processes took 60% of the CPU meanwhile: disturbed as well."""
    fake_probe(monkeypatch, 0.5)
    monkeypatch.setattr(calibration, "_others_share", lambda probe: (probe(), 0.6))
    enc = Encoder.load(st_folder, device="cpu", backend="auto")
    assert (enc.backend, enc.backend_choice.disturbed) == ("torch", True)
    assert not list(fresh.glob("backend-*.json"))


def test_an_explicit_backend_always_wins_and_measures_nothing(st_folder, fresh, monkeypatch, capsys, tmp_path):
    faster = fake_probe(monkeypatch, 0.5)  # onnx "2x faster"
    enc = Encoder.load(st_folder, device="cpu", backend="torch")
    assert (enc.backend, enc.backend_choice.to_dict()["requested"]) == ("torch", "torch")
    assert enc.use_backend("torch") == enc.backend == "torch"
    calls = fake_probe(monkeypatch, 2.0)  # onnx "2x slower"
    enc = Encoder.load(st_folder, device="cpu", backend="onnx")
    assert (enc.backend, enc.backend_choice.onnx_over_torch) == ("onnx", None)
    assert enc.use_backend("onnx") == enc.backend == "onnx"
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    for backend in ("onnx", "torch"):
        assert main(["encode", "--model", str(st_folder), "--input", str(texts), "--out", str(tmp_path / "v.npy"),
                     "--backend", backend]) == 0
    monkeypatch.setenv("TEXTCL_BACKEND", "onnx")  # an explicit default in the environment wins too
    assert main(["encode", "--model", str(st_folder), "--input", str(texts), "--out", str(tmp_path / "v.npy")]) == 0
    assert faster == calls == [] and not fresh.exists()
    assert "backend" not in capsys.readouterr().err  # an explicit setting is not announced


@pytest.mark.parametrize("damage", ["not json {", "null", '{"schema": 1, "kind": "backend"}', "strings"])
def test_a_corrupt_cache_entry_is_ignored_and_rewritten(st_folder, fresh, monkeypatch, damage):
    calls = fake_probe(monkeypatch, 1.2)
    Encoder.load(st_folder, device="cpu", backend="auto")
    (path,) = fresh.glob("backend-*.json")
    if damage == "strings":  # values that are not numbers, as an older or broken writer might leave
        entry = json.loads(path.read_text())
        entry["values"] = {"onnx_s": "slow", "torch_s": "fast"}
        damage = json.dumps(entry)
    path.write_text(damage)
    new_process(monkeypatch)
    again = fake_probe(monkeypatch, 0.8)
    enc = Encoder.load(st_folder, device="cpu", backend="auto")  # never an error: measured again
    assert (enc.backend, enc.backend_choice.cached, len(calls), len(again)) == ("onnx", False, 1, 1)
    assert json.loads(path.read_text())["values"]["onnx_over_torch"] == 0.8


def test_a_failed_measurement_or_export_falls_back_on_torch(st_folder, fresh, monkeypatch, capsys):
    def broken(model, session, **kwargs):
        raise RuntimeError("the export differs from torch")

    monkeypatch.setattr(backend_choice, "backend_probe", broken)
    enc = Encoder.load(st_folder, device="cpu", backend="auto")
    assert (enc.backend, enc.backend_choice.resolved) == ("torch", "torch")
    assert "backend auto -> torch: ONNX Runtime unavailable for this model (the export differs from torch)" in (
        capsys.readouterr().err)
    assert not list(fresh.glob("backend-*.json"))


def test_auto_without_onnx_support_gives_torch_and_says_why_without_measuring(st_folder, monkeypatch, capsys):
    calls = fake_probe(monkeypatch, 0.5)
    enc = Encoder.load(st_folder, device="cpu", backend="auto", pooling="first_last_avg")
    assert enc.backend_choice.line() == ("backend auto -> torch: pooling 'first_last_avg' reads more than the "
                                         "last hidden state")
    monkeypatch.setattr(ob, "available", lambda: False)
    enc = Encoder.load(st_folder, device="cpu", backend="auto")
    assert enc.backend_choice.reason.startswith("onnxruntime is not installed")
    assert calls == [] and enc.backend == "torch"
    assert capsys.readouterr().err.count("textcl: backend auto -> torch") == 2


def test_only_the_first_process_of_a_job_prints_the_decision(monkeypatch, capsys):
    choice = backend_choice.BackendChoice("auto", "torch", 1.08)
    monkeypatch.setenv("RANK", "1")
    assert backend_choice.announce(choice) is False
    monkeypatch.setenv("RANK", "0")
    assert backend_choice.announce(choice) is True and backend_choice.announce(choice) is False
    assert capsys.readouterr().err == "textcl: backend auto -> torch: onnx measured 1.08x slower on this CPU\n"


def test_the_real_probe_times_both_backends(st_folder, monkeypatch):
    enc = Encoder.load(st_folder, device="cpu")
    enc.train()
    onnx = ob.OnnxTransformer(st_folder / ob.ONNX_FILE)
    opened, shapes = [], []

    def session():
        opened.append(1)
        return lambda features: shapes.append(tuple(features["input_ids"].shape)) or onnx(features)

    values = backend_choice.backend_probe(enc.model, session, max_length=16, rows=2, budget_s=0.0)
    assert values["torch_s"] > 0 and values["onnx_s"] > 0 and values["spread"] > 0 and opened == [1]
    assert shapes == [(2, 16)] * 3  # both lengths capped at 16: one batch; a warm-up and two timed pairs
    assert values["onnx_over_torch"] == pytest.approx(values["onnx_s"] / values["torch_s"])
    assert enc.model.training  # the probe ran in eval mode and gave the mode back


def test_probe_batches_are_fixed_and_unpadded():
    a, b = backend_choice.probe_batch(100, 8, 64), backend_choice.probe_batch(100, 8, 64)
    assert a["input_ids"].shape == (8, 64) and torch.equal(a["input_ids"], b["input_ids"])
    assert int(a["input_ids"].max()) < 100 and bool(a["attention_mask"].all())


def test_eval_json_reports_record_the_backend_decision(st_folder, monkeypatch, capsys, tmp_path):
    from test_beir import write_beir

    fake_probe(monkeypatch, 1.08)
    sts = tmp_path / "pairs.tsv"
    sts.write_text("a cat\ta cat sits\t4.5\na dog\tthe sun\t0.5\nbirds sing\tbirds singing\t4.8\nrain\ta ship\t1\n")
    out = tmp_path / "sts.json"
    assert main(["eval", "sts", "--model", str(st_folder), "--data", str(sts), "--bootstrap", "10", "--backend",
                 "auto", "--compare", str(st_folder), "--json", str(out)]) == 0
    expected = {"requested": "auto", "resolved": "torch", "onnx_over_torch": 1.08, "cached": False,
                "disturbed": False, "reason": None}
    report = json.loads(out.read_text())
    assert report["backend"] == expected and report["backend_b"] == {**expected, "cached": True}
    assert capsys.readouterr().err.count("backend auto -> torch: onnx measured 1.08x slower") == 1  # once
    beir = write_beir(tmp_path / "beir", [{"_id": "d1", "title": "", "text": "a cat"}],
                      [{"_id": "q1", "text": "cat"}], [("q1", "d1", 1)])
    out = tmp_path / "retrieval.json"
    assert main(["eval", "retrieval", "--model", str(st_folder), "--data", str(beir), "--backend", "onnx",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["backend"]["resolved"] == "onnx"


def test_env_lists_the_backend_measurement_with_its_ratio(st_folder, monkeypatch, capsys):
    fake_probe(monkeypatch, 1.08)
    assert main(["env", "--measure", "--model", str(st_folder)]) == 0
    out = capsys.readouterr().out
    assert f"{st_folder}: backend auto -> torch: onnx measured 1.08x slower on this CPU" in out
    assert "backend [model_type bert, hidden 32, layers 2, heads 2, intermediate 64" in out
    assert "onnx_over_torch 1.08" in out
    shutil.rmtree(calibration.cache_dir())
    assert main(["env"]) == 0 and "none yet (training with mixed_precision: auto and --backend auto" in (
        capsys.readouterr().out)
