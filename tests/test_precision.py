"""Precision: auto takes bf16 only where the hardware has it; emulated bf16 warns; evaluation follows the run."""
import warnings

import pytest

from textcl.models import precision
from textcl.models.precision import resolve_precision


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "no")])
def test_auto_takes_bf16_only_where_native(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "native_bf16", lambda device_type: native)
    assert resolve_precision("auto", "cpu") == expected


def test_emulated_bf16_is_kept_but_warns(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device_type: False)
    with pytest.warns(RuntimeWarning, match=r"train.mixed_precision is bf16, but this CPU has no native bf16.*'auto'"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device_type: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", "cpu") == "bf16"
        assert resolve_precision("no", "cpu") == "no"


def test_unknown_precision_names_the_field():
    with pytest.raises(ValueError, match=r"train.mixed_precision: expected one of auto, no, fp16, bf16, got 'fp8'"):
        resolve_precision("fp8", "cpu")


def test_native_bf16_answers_for_this_machine():
    assert isinstance(precision.native_bf16("cpu"), bool)
    assert precision.native_bf16("mps") is False


@pytest.mark.parametrize("native", [True, False])
def test_training_with_auto_records_and_evaluates_in_the_chosen_precision(tiny_bert_dir, tmp_path, monkeypatch, native):
    from textcl.config import config_from_dict
    from textcl.models import Encoder
    from textcl.train import train

    monkeypatch.setattr(precision, "native_bf16", lambda device_type: native)
    seen = []
    real = Encoder.encode

    def spy(self, texts, *args, **kwargs):
        seen.append(self.encode_bf16 if kwargs.get("bf16") is None else kwargs["bf16"])
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", spy)
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"sentence number {i} is here\n" for i in range(16)))
    sts = tmp_path / "dev.tsv"
    sts.write_text("a cat\ta cat sits\t4.5\na dog\tthe sun\t0.5\nbirds sing\tbirds singing\t4.8\nrain\ta ship\t1.0\n")
    config = config_from_dict({
        "model": {"name": str(tiny_bert_dir), "max_seq_len": 16}, "data": {"path": str(corpus)},
        "eval": {"data": [str(sts)], "test": [], "every": 2, "before": False},
        "train": {"batch_size": 4, "max_steps": 2, "checkpoint_every": 0, "mixed_precision": "auto",
                  "report_to": "none", "plot": False}})
    result = train(config, output_dir=tmp_path / "run")
    assert result.metrics["precision"] == ("bf16" if native else "no")
    assert result.metrics["eval_precision"] == ("bf16" if native else "fp32")
    assert seen and set(seen) == {native}
