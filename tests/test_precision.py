"""Precision: auto takes what measured faster on this machine (cached); an explicit setting wins; emulated bf16
warns; evaluation follows the run."""
import json
import warnings

import pytest

from textcl.models import calibration, precision
from textcl.models.precision import resolve_precision


def fake_probe(fp32_s: float, bf16_s: float, calls: list):
    def probe():
        calls.append(1)
        return {"fp32_s": fp32_s, "bf16_s": bf16_s, "bf16_over_fp32": bf16_s / fp32_s}
    return probe


@pytest.mark.parametrize("fp32_s, bf16_s, expected, line", [
    (1.0, 3.4, "no", "precision auto -> fp32: bf16 measured 3.40x slower than fp32 on this CPU"),
    (1.5, 1.0, "bf16", "precision auto -> bf16: bf16 measured 1.50x faster than fp32 on this CPU"),
    (1.0, 0.97, "no", "precision auto -> fp32: bf16 measured 1.03x faster than fp32 on this CPU"),  # < 5%: fp32
])
def test_auto_takes_what_measured_faster_and_caches_it(tmp_path, monkeypatch, fp32_s, bf16_s, expected, line):
    from textcl.models.calibration import cache_dir

    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path))
    calls = []
    choice = precision.choose_precision("auto", "cpu", hidden=32, intermediate=64,
                                        probe=fake_probe(fp32_s, bf16_s, calls))
    assert (choice.resolved, choice.line(), len(calls)) == (expected, line, 1)
    assert choice.to_dict() == {"requested": "auto", "resolved": expected, "bf16_over_fp32": round(bf16_s / fp32_s, 4),
                                "disturbed": False}
    files = list(cache_dir().glob("precision-*.json"))
    assert len(files) == 1 and cache_dir() == tmp_path / "calibration"
    again = precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=fake_probe(9, 1, calls))
    assert (again.resolved, again.cached, len(calls)) == (expected, True, 1)  # from the cache: not measured
    assert again.line() == line + " (cached)"
    other = precision.choose_precision("auto", "cpu", hidden=64, intermediate=128, probe=fake_probe(1, 9, calls))
    assert (other.resolved, len(calls)) == ("no", 2)  # another model shape is another key
    assert len(list(cache_dir().glob("precision-*.json"))) == 2


def test_an_explicit_precision_wins_without_measuring(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path))
    calls = []
    for setting in ("no", "fp16", "bf16"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            choice = precision.choose_precision(setting, "cpu", probe=fake_probe(1, 9, calls))
        assert (choice.resolved, choice.bf16_over_fp32, choice.line()) == (setting, None, f"precision {setting} -> "
                                                                          + {"no": "fp32"}.get(setting, setting))
    assert calls == [] and not (tmp_path / "calibration").exists()


@pytest.mark.parametrize("damage", ["not json {", '{"schema": 0}', "null", "stale"])
def test_a_corrupt_or_stale_cache_entry_is_measured_again_and_rewritten(tmp_path, monkeypatch, damage):
    from textcl.models.calibration import cache_dir

    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path))
    calls = []
    precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=fake_probe(1, 2, calls))
    (path,) = cache_dir().glob("precision-*.json")
    if damage == "stale":  # an entry whose values are not numbers, as an older textcl might have written
        entry = json.loads(path.read_text())
        entry["values"] = {"fp32_s": "fast"}
        damage = json.dumps(entry)
    path.write_text(damage)
    from textcl.models import calibration

    calibration._DECIDED.clear()  # a new process reads the damaged file
    choice = precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=fake_probe(2, 1, calls))
    assert (choice.resolved, choice.cached, len(calls)) == ("bf16", False, 2)
    assert json.loads(path.read_text())["values"]["bf16_s"] == 1.0


def test_the_cache_key_follows_the_machine_profile(tmp_path, monkeypatch):
    from textcl.models import calibration

    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path))
    calls = []
    precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=fake_probe(1, 2, calls))
    real = calibration.machine_profile
    monkeypatch.setattr(calibration, "machine_profile",
                        lambda device_type="cpu": {**real(device_type), "cpu_flags": ["avx2"], "cpu": "another CPU"})
    precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=fake_probe(1, 2, calls))
    assert len(calls) == 2  # another CPU is measured anew, not given this one's answer


def test_the_real_probe_measures_both_precisions_on_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path))
    values = precision.precision_probe("cpu", 32, 64, tokens=64, repeats=1)
    assert values["fp32_s"] > 0 and values["bf16_s"] > 0
    assert values["bf16_over_fp32"] == pytest.approx(values["bf16_s"] / values["fp32_s"])


def test_emulated_bf16_is_kept_but_warns(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device_type: False)
    with pytest.warns(RuntimeWarning, match=r"train.mixed_precision is bf16, but this CPU has no bf16 instructions.*'auto'"):
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
def test_training_with_auto_records_and_evaluates_in_the_chosen_precision(tiny_bert_dir, tmp_path, monkeypatch, native,
                                                                         capsys):
    from textcl.config import config_from_dict
    from textcl.models import Encoder
    from textcl.train import train

    real_choose = precision.choose_precision
    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(calibration, "_others_share", lambda probe: (probe(), 0.0))  # a quiet machine, always
    monkeypatch.setattr("textcl.train.build.choose_precision", lambda requested, device_type, **kw: real_choose(
        requested, device_type, **kw, probe=fake_probe(1.0, 0.5 if native else 3.0, [])))
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
    ratio = 0.5 if native else 3.0
    assert result.metrics["precision"] == {"requested": "auto", "resolved": "bf16" if native else "no",
                                           "bf16_over_fp32": ratio, "disturbed": False}
    assert f"textcl: precision auto -> {'bf16' if native else 'fp32'}: bf16 measured" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["precision"]["bf16_over_fp32"] == ratio
    assert result.metrics["eval_precision"] == ("bf16" if native else "fp32")
    assert seen and set(seen) == {native}


@pytest.mark.parametrize("native", [True, False])
def test_a_disturbed_measurement_is_not_cached_and_the_instructions_decide_the_run(tmp_path, monkeypatch, native):
    """Two rounds whose bf16/fp32 ratios differ by 50% were taken while other work shared the cores: the
    figure is not trusted (the CPU's bf16 instructions decide this run, whatever the disturbed figure says),
    and the next run measures again instead of keeping it."""
    from textcl.models import calibration
    from textcl.models.calibration import cache_dir

    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "native_bf16", lambda device_type: native)
    calls = []

    def disturbed():
        calls.append(1)
        return {"fp32_s": 1.0, "bf16_s": 0.5, "bf16_over_fp32": 0.5, "spread": 0.5}

    first = precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=disturbed)
    assert first.resolved == ("bf16" if native else "no") and not list(cache_dir().glob("precision-*.json"))
    precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=disturbed)
    assert len(calls) == 1  # this process keeps its first answer
    calibration._DECIDED.clear()  # a new process
    precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=disturbed)
    assert len(calls) == 2


def test_a_measurement_beside_busy_processes_falls_back_on_the_instructions(tmp_path, monkeypatch):
    """Other processes took 60% of the CPU during the measurement: the bf16 instructions decide this run (a
    loaded machine once measured bf16 1.2x slower on an AMX CPU where it is 3x faster) and nothing is cached."""
    from textcl.models import calibration

    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path))
    monkeypatch.setattr(calibration, "_others_share", lambda probe: (probe(), 0.6))
    for native in (True, False):
        monkeypatch.setattr(precision, "native_bf16", lambda device_type, native=native: native)
        choice = precision.choose_precision("auto", "cpu", hidden=32, intermediate=64,
                                            probe=fake_probe(1.0, 1.2, []))
        assert (choice.resolved, choice.disturbed) == ("bf16" if native else "no", True)
        assert "was disturbed by other work on this CPU, so its bf16 instructions decided" in choice.line()
    assert not list(calibration.cache_dir().glob("*.json"))


def test_the_share_of_other_processes_is_measured_from_the_kernel(monkeypatch):
    """Over 1 s on 2 CPUs, 1.5 busy CPU-seconds of which 0.5 were the probe's own: others used 1 of 2 CPUs."""
    from textcl.cpu_load import CpuTimes
    from textcl.models import calibration

    readings = iter([CpuTimes(10.0, 100.0, 3.0, 2), CpuTimes(11.0, 101.5, 3.5, 2)])
    monkeypatch.setattr(calibration, "read_times", lambda: next(readings))
    assert calibration._others_share(lambda: {"x": 1.0}) == ({"x": 1.0}, 0.5)
    readings = iter([CpuTimes(10.0, 100.0, 3.0, 2), CpuTimes(10.05, 100.1, 3.0, 2)])
    assert calibration._others_share(lambda: {"x": 1.0}) == ({"x": 1.0}, None)  # 50 ms: too short to judge
    monkeypatch.setattr(calibration, "read_times", lambda: None)
    assert calibration._others_share(lambda: {"x": 1.0}) == ({"x": 1.0}, None)  # not Linux


def test_an_unwritable_cache_still_measures_and_decides(monkeypatch):
    """A read-only home (or any cache folder that cannot be created) must not stop training: the measurement
    decides the run and is not shared."""
    monkeypatch.setenv("TEXTCL_CACHE", "/proc/textcl-cannot-be-here")
    calls = []
    from textcl.models import calibration

    for _ in range(2):
        calibration._DECIDED.clear()  # each a new process
        choice = precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=fake_probe(2, 1, calls))
        assert choice.resolved == "bf16" and not choice.cached
    assert len(calls) == 2


def test_the_cache_key_follows_torch_threads(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path))
    calls = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=fake_probe(1, 2, calls))
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 2  # 1 thread and 2 threads are measured apart; the second 1-thread call is cached


def test_an_instruction_cap_is_another_machine(tmp_path, monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX512_CORE keeps oneDNN below its bf16 kernels, as on a CPU without them: the cached
    answer of the uncapped machine is not reused, and bf16 counts as emulated for warnings and fallbacks."""
    from textcl.models import calibration

    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(calibration, "_cpuinfo", lambda: ("a CPU", ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]))
    calls = []
    precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=fake_probe(1, 2, calls))
    precision.native_bf16.cache_clear()  # one answer per process; this test changes the environment
    assert precision.native_bf16("cpu")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core")
    calibration._DECIDED.clear()
    precision.native_bf16.cache_clear()
    precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=fake_probe(1, 2, calls))
    assert len(calls) == 2 and calibration.machine_profile()["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "avx512_core"}
    assert not precision.native_bf16("cpu")
    precision.native_bf16.cache_clear()


def test_an_entry_without_the_figures_read_is_measured_again(tmp_path, monkeypatch):
    """A cache entry whose values are valid numbers but lack bf16_s / fp32_s (a hand edit, another version)
    is measured again and rewritten, never a KeyError."""
    from textcl.models import calibration

    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path))
    calls = []
    precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=fake_probe(1, 2, calls))
    (path,) = (tmp_path / "calibration").glob("precision-*.json")
    entry = json.loads(path.read_text())
    entry["values"] = {"ratio": 0.5}
    path.write_text(json.dumps(entry))
    calibration._DECIDED.clear()
    choice = precision.choose_precision("auto", "cpu", hidden=32, intermediate=64, probe=fake_probe(1, 2, calls))
    assert (choice.resolved, len(calls)) == ("no", 2) and json.loads(path.read_text())["values"]["bf16_s"] == 2.0
