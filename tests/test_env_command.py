"""``textcl env``: the machine profile and the cached measurements, as text and JSON."""
import json

from textcl.cli import main


def test_env_reports_the_machine_and_each_cached_measurement(tmp_path, monkeypatch, capsys):
    from textcl.models import precision

    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path / "cache"))
    precision.choose_precision("auto", "cpu", hidden=32, intermediate=64,
                               probe=lambda: {"fp32_s": 1.0, "bf16_s": 3.4, "bf16_over_fp32": 3.4, "spread": 0.01})
    assert main(["env", "--json", str(tmp_path / "env.json")]) == 0
    text = capsys.readouterr().out
    assert "torch: 2." in text and "cpu flags:" in text and "bf16 instructions:" in text
    assert "precision [hidden 32, intermediate 64] on cpu" in text and "bf16_over_fp32 3.4" in text
    report = json.loads((tmp_path / "env.json").read_text())
    assert report["machine"]["cores"] >= 1 and report["versions"]["torch"].startswith("2.")
    (entry,) = report["calibrations"]
    assert entry["kind"] == "precision" and entry["values"]["bf16_over_fp32"] == 3.4
    assert main(["env", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["calibrations"][0]["shape"] == {"hidden": 32, "intermediate": 64}


def test_env_measure_runs_both_measurements_for_a_model(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path / "cache"))
    assert main(["env", "--measure", "--model", str(tiny_bert_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{tiny_bert_dir}: precision auto -> " in out and f"{tiny_bert_dir}: chunk cost " in out
