"""textcl tune on the tiny BERT: a trial trains exactly what best.yaml describes, the pruner stops a trial at
a known step, a killed study continues where it stopped, and two workers share one SQLite study."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from safetensors.torch import load_file

import textcl.tune.search as search
import textcl.tune.storage as storage
from textcl.cli import main
from textcl.config import load_config
from textcl.errors import ConfigError, TextclError
from textcl.threads import usable_cores
from textcl.train import train
from textcl.tune import tune
from textcl.tune.recipe import TRIAL_SETTINGS

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "the sun is bright today", "she reads a long book",
             "rain fell on the quiet town", "he plays the piano at night", "birds sing in the early morning",
             "the train left the station late", "children laugh in the garden", "a ship sails across the sea",
             "the old man walks slowly", "snow covers the high mountains", "we cook dinner together",
             "the river flows to the ocean", "a small boat drifts away", "music fills the crowded hall"]
PAIRS = [("the cat sat", "a cat was sitting", 4.5), ("a dog ran", "the sun is bright", 0.5),
         ("birds sing", "birds are singing", 4.8), ("rain fell", "a ship sails", 1.0),
         ("the old man walks", "an old man is walking", 4.2), ("we cook dinner", "the river flows", 0.2)]
SPACE = ("loss.temperature: {uniform: [0.03, 0.1]}\n"
         "data.augment:\n  choice:\n    dropout: {identity: {}}\n"
         "    crop: {span_crop: {min_ratio: 0.5, max_ratio: 0.9}}\n")


@pytest.fixture()
def files(tiny_bert_dir, tmp_path):
    """A recipe of 6 steps evaluated every 2 on a dev file, with a test file; and a space over it."""
    corpus, dev, test = tmp_path / "corpus.txt", tmp_path / "dev.tsv", tmp_path / "test.tsv"
    corpus.write_text("\n".join(f"{s} {i}" for i, s in enumerate(SENTENCES * 2)) + "\n")
    dev.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in PAIRS))
    test.write_text("".join(f"{b}\t{a}\t{s}\n" for a, b, s in PAIRS))
    recipe = {"name": "tiny", "model": {"name": str(tiny_bert_dir), "max_seq_len": 16, "save_max_seq_len": True},
              "data": {"path": str(corpus)}, "optim": {"lr": 1e-3},
              "eval": {"data": [str(dev)], "test": [str(test)], "every": 2, "batch_size": 8},
              "train": {"batch_size": 4, "max_steps": 8, "log_every": 1, "report_to": "none", "plot": False}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path / "recipe.yaml", tmp_path / "space.yaml"


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_best_yaml_trains_exactly_what_the_best_trial_trained(files, tmp_path, capsys):
    recipe, space = files
    out = tmp_path / "tune"
    code = main(["tune", str(recipe), "--space", str(space), "--trials", "2", "--out", str(out), "--pruner", "none",
                 "--set", "train.max_steps=6", "--keep-models", "--seed", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "best: trial" in printed and "95% CI of A-B" in printed
    for name in ("best.yaml", "trials.csv", "history.png", "importance.png", "summary.json", "comparison.json"):
        assert (out / name).is_file(), name
    rows = read_csv(out / "trials.csv")
    assert [r["state"] for r in rows] == ["complete", "complete"]
    assert {r["data.augment"] for r in rows} <= {"dropout", "crop"} and all(r["loss.temperature"] for r in rows)
    best = max(rows, key=lambda r: float(r["value"]))
    trial_dir = out / "trials" / f"{int(best['number']):04d}"

    # best.yaml is the recipe with --set and the best trial's values; the trial added only its bookkeeping
    config = load_config(out / "best.yaml")
    assert config.train.max_steps == 6 and config.loss.temperature == pytest.approx(float(best["loss.temperature"]))
    assert config.data.augment == ({"identity": {}} if best["data.augment"] == "dropout" else
                                   {"span_crop": {"min_ratio": 0.5, "max_ratio": 0.9}})
    assert config.eval.test and config.eval.before  # the recipe's own, not the trial's
    trained = json.loads((trial_dir / "config.json").read_text())
    described = config.to_dict()
    for field, value in {**TRIAL_SETTINGS, "name": None, "output_dir": None}.items():
        section, _, key = field.rpartition(".")
        for d in (trained, described):
            (d[section] if section else d).pop(key)
    assert trained == described

    # ... and training it gives the trial's weights and dev score
    again = train(config, output_dir=tmp_path / "again")
    for k, w in weights(trial_dir / "model").items():
        torch.testing.assert_close(weights(again.model_dir)[k], w, atol=0, rtol=0)
    assert again.metrics["after"]["dev"]["spearman"] == pytest.approx(float(best["value"]))

    # the final comparison trained best.yaml into its output_dir and the original beside it, on the test set only
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["best"]["model"] == str(out / "final" / "best" / "model")
    for k, w in weights(out / "final" / "best" / "model").items():
        torch.testing.assert_close(weights(again.model_dir)[k], w, atol=0, rtol=0)
    (test_set,) = comparison["test"]["sets"].values()
    assert test_set["n"] == len(PAIRS) and len(test_set["ci95"]) == 2
    assert list(comparison["test"]["sets"]) == ["test"]


@pytest.mark.parametrize("pruner", ["halving", "median"])
def test_the_pruner_stops_hopeless_trials_at_known_steps(files, tmp_path, pruner):
    """A fake dev evaluator scores trial 0 50, 70, 90 at steps 2, 4, 6 and its saved model 90; trial 1 10 (below
    trial 0 at step 2: stopped there); trial 2 60, 75, 80 (ahead at steps 2 and 4, behind at step 6, its last:
    stopped there, before the final evaluation). Both pruners agree."""
    recipe, space = files
    scores = iter([50.0, 70.0, 90.0, 90.0] + [10.0] + [60.0, 75.0, 80.0])
    calls = []

    def fake(encoder):
        calls.append(1)
        return {"fake": next(scores)}

    pruner = pruner if pruner == "halving" else optuna.pruners.MedianPruner(n_startup_trials=1)
    result = tune(recipe, space, trials=3, out=tmp_path / "tune", overrides=["eval.data=[]", "train.max_steps=6"],
                  pruner=pruner, evaluators=[fake], compare=False)
    first, second, third = result.trials
    assert (first["state"], first["value"], first["steps"]) == ("complete", 90.0, 6)
    assert (second["state"], second["pruned_at"], second["steps"], second["last_score"]) == ("pruned", 2, 2, 10.0)
    assert (third["state"], third["pruned_at"], third["steps"], third["last_score"]) == ("pruned", 6, 6, 80.0)
    assert len(calls) == 8  # trial 2 was not evaluated again after its last step
    trials = tmp_path / "tune" / "trials"
    assert max(int(r["step"]) for r in read_csv(trials / "0001" / "log.csv")) == 2
    for n in ("0001", "0002"):
        assert not (trials / n / "model").exists() and not (trials / n / "metrics.json").exists()
    assert result.best["number"] == 0


def _study(out):  # opened as textcl opens it (a reader racing the study's creation must not break it)
    return optuna.load_study(study_name="recipe", storage=storage.open_storage(storage.default_storage(out)))


def test_a_killed_study_continues_where_it_stopped(files, tmp_path, monkeypatch):
    """Kill a running `textcl tune` (SIGKILL) once two trials are done; a rerun marks the killed trial failed
    (its heartbeat stopped), keeps the two, and runs trials until the study holds the asked total."""
    recipe, space = files
    out = tmp_path / "tune"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "textcl.cli", "tune", str(recipe), "--space", str(space),
                             "--trials", "6", "--out", str(out), "--pruner", "none", "--no-compare"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if (out / "study.sqlite3").exists():
                try:
                    states = [t.state for t in _study(out).get_trials()]
                except (KeyError, optuna.exceptions.StorageInternalError):  # the study is being created
                    states = []
                if states.count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in states:  # killed mid-trial
                    break
            assert proc.poll() is None, "textcl tune ended before it was killed"
            time.sleep(0.2)
        else:
            pytest.fail("two trials did not complete in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = {t.number: t for t in _study(out).get_trials()}
    assert sum(t.state == TrialState.RUNNING for t in before.values()) == 1

    monkeypatch.setattr(storage, "GRACE_S", 1)
    monkeypatch.setattr(storage, "HEARTBEAT_S", 1)
    monkeypatch.setattr(search, "POLL_S", 0.2)
    result = tune(recipe, space, trials=4, out=out, pruner="none", compare=False)
    after = {t.number: t for t in _study(out).get_trials()}
    counted = [n for n, t in after.items() if t.state == TrialState.COMPLETE]
    assert len(counted) == 4
    for n, t in before.items():  # what the killed process finished stays as it was; what it was running failed
        if t.state == TrialState.COMPLETE:
            assert after[n].value == t.value and after[n].datetime_start == t.datetime_start
        else:
            assert t.state == TrialState.RUNNING and after[n].state == TrialState.FAIL
    assert sorted(after) == list(range(len(after)))  # numbers continue
    assert [r["number"] for r in result.trials] == sorted(after) and (out / "best.yaml").is_file()
    # a rerun with a larger total adds trials to the same study
    tune(recipe, space, trials=5, out=out, pruner="none", compare=False)
    assert len(_study(out).get_trials(states=(TrialState.COMPLETE,))) == 5


def test_two_workers_share_one_sqlite_study(files, tmp_path):
    recipe, space = files
    out = tmp_path / "tune"
    result = tune(recipe, space, trials=4, out=out, workers=2, pruner="none", compare=False, seed=0)
    trials = _study(out).get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)  # none lost, none failed, none beyond the total
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids  # both workers ran trials
    assert {t.user_attrs["threads"] for t in trials} == {max(1, usable_cores() // 2)}  # the cores split in two
    for t in trials:  # each trial ran once, in its own folder, to its last step
        log = read_csv(out / "trials" / f"{t.number:04d}" / "log.csv")
        steps = [int(r["step"]) for r in log if r["loss"]]
        assert steps == sorted(set(steps)) and steps[-1] == 8
    assert len(result.trials) == 4


def test_a_study_refuses_another_space(files, tmp_path, capsys):
    recipe, space = files
    out = tmp_path / "tune"
    tune(recipe, space, trials=1, out=out, pruner="none", compare=False, overrides=["train.max_steps=2"])
    other = tmp_path / "other.yaml"
    other.write_text("loss.temperature: {uniform: [0.03, 0.2]}\n")
    code = main(["tune", str(recipe), "--space", str(other), "--trials", "2", "--out", str(out),
                 "--set", "train.max_steps=2"])
    assert code == 2
    assert "searches another space" in capsys.readouterr().err
    assert main(["tune", str(recipe), "--space", str(space), "--trials", "2", "--out", str(out), "--check"]) == 0


def test_a_trial_killed_before_its_first_heartbeat_is_failed(tmp_path, monkeypatch):
    """A process killed between asking for a trial and recording its first heartbeat leaves a RUNNING trial
    that Optuna's heartbeat check never sees; once it started more than GRACE_S ago it is failed (a rerun
    waited on it forever before)."""
    from textcl.tune import storage as st

    s = st.open_storage(f"sqlite:///{tmp_path / 'study.sqlite3'}")
    study = optuna.create_study(study_name="s", storage=s)
    study.ask()  # running, no heartbeat, as if its process died at once
    monkeypatch.setattr(st, "GRACE_S", 3600)
    st.fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]  # not stale yet
    monkeypatch.setattr(st, "GRACE_S", -1)
    st.fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]


@pytest.mark.parametrize("guard_select, expected", [(False, 80.0), (True, 65.0)])
def test_a_trial_without_evaluations_is_scored_on_its_dev_sets_not_its_guards(guard_select, expected):
    """eval.every: 0 leaves no selected_on: the trial's value is its dev sets' mean after training, a guard
    joining it only where eval.guard_select made it choose."""
    from textcl.tune.trial import dev_score

    metrics = {"after": {"dev": {"spearman": 80.0, "n": 10}, "wiki": {"score": 50.0, "n": 10, "guard": True},
                         "dev@32d": {"spearman": 10.0}},
               "selected_on": None, "config": {"eval": {"guard_select": guard_select}}}
    assert dev_score(metrics) == pytest.approx(expected)
    assert dev_score({**metrics, "selected_on": ["dev"]}) == pytest.approx(80.0)
    # as the trainer selects: the task's mean and the guards' mean weigh the same, however many sets each has
    two = {**metrics, "after": {**metrics["after"], "wiki2": {"score": 30.0, "n": 10, "guard": True}}}
    assert dev_score({**two, "selected_on": ["dev", "wiki", "wiki2"]}) == pytest.approx((80.0 + 40.0) / 2)


def test_a_trial_whose_best_step_wins_is_not_pruned_for_a_worse_last_step(files, tmp_path):
    """A trial's value is its best step's model (eval.select_best), so the pruner sees the best score so far:
    trial 1 scores 85, 80, 69 against trial 0's 80, 75, 70; its best step (85) beats trial 0, so it runs to its
    end and wins (pruned at step 6 for its 69, it lost the model that scored 85)."""
    recipe, space = files
    scores = iter([80.0, 75.0, 70.0, 80.0] + [85.0, 80.0, 69.0, 85.0])

    def fake(encoder):
        return {"fake": next(scores)}

    result = tune(recipe, space, trials=2, out=tmp_path / "tune", overrides=["eval.data=[]", "train.max_steps=6"],
                  pruner="halving", evaluators=[fake], compare=False)
    first, second = result.trials
    assert (first["state"], first["value"]) == ("complete", 80.0)
    assert (second["state"], second["value"], second["steps"]) == ("complete", 85.0, 6)
    assert result.best["number"] == 1


def test_a_run_that_never_evaluated_while_training_records_its_selection_sets(files, tmp_path):
    """eval.every: 0: the run's metrics name the sets that select (eval.data), so a score read off them (a
    trial's value, the final comparison's dev figure) never averages in a test set."""
    from textcl.tune.trial import dev_score

    recipe, _ = files
    config = load_config(recipe, ["eval.every=0", "train.max_steps=2"])
    result = train(config, output_dir=tmp_path / "run")
    names = list(result.metrics["after"])
    assert result.metrics["selected_on"] == ["dev"] and "test" in names, names
    assert dev_score(result.metrics) == pytest.approx(result.metrics["after"]["dev"]["spearman"])
    card = (result.model_dir / "README.md").read_text()
    assert "Not evaluated during training (no best step chosen); scored on dev." in card


def _on_first_trial(monkeypatch, effect):
    """``effect(trial)`` runs before the first trial trains (it may raise); every trial then trains as usual."""
    real, calls = search.run_trial, []

    def run(trial, *args, **kwargs):
        calls.append(trial.number)
        if len(calls) == 1:
            effect(trial)
        return real(trial, *args, **kwargs)

    monkeypatch.setattr(search, "run_trial", run)


def _raise(exc):
    raise exc


def test_a_seeded_study_continued_samples_new_values(files, tmp_path):
    """A rerun with the same --seed continues the sampler's stream instead of restarting it: the added trials
    are not the first ones again (a repeat trains the same run twice, train.seed being fixed)."""
    recipe, space = files
    out = tmp_path / "tune"
    common = dict(out=out, pruner="none", compare=False, seed=0, overrides=["train.max_steps=2"])
    tune(recipe, space, trials=2, **common)
    tune(recipe, space, trials=4, **common)
    params = [t.params for t in sorted(_study(out).get_trials(), key=lambda t: t.number)]
    assert len(params) == 4 and params[2] != params[0] and params[3] != params[1], params
    again = tmp_path / "again"  # a new study with the same seed starts as the first did
    tune(recipe, space, trials=2, **{**common, "out": again})
    assert [t.params for t in sorted(_study(again).get_trials(), key=lambda t: t.number)] == params[:2]


def test_a_trial_whose_values_fail_is_a_result_and_a_study_of_failures_ends(files, tmp_path, monkeypatch):
    """A trial whose sampled combination the recipe refuses (or that diverges) fails alone, its reason kept, and
    another takes its place; a study whose failures reach --trials stops, naming the last one (it looped)."""
    from textcl.errors import ConfigError
    from textcl.train import TrainingDiverged

    recipe, space = files
    _on_first_trial(monkeypatch, lambda t: _raise(ConfigError("train.batch_size", "expected at most 4 with this "
                                                                                   "temperature")))
    out = tmp_path / "tune"
    tune(recipe, space, trials=2, out=out, pruner="none", compare=False, overrides=["train.max_steps=2"])
    trials = sorted(_study(out).get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert "train.batch_size: expected at most 4" in trials[0].user_attrs["error"]
    assert "train.batch_size: expected at most 4" in read_csv(out / "trials.csv")[0]["error"]

    calls = []

    def diverges(trial, *args, **kwargs):
        calls.append(trial.number)
        if len(calls) > 20:
            raise RuntimeError("the study did not stop")
        raise TrainingDiverged(f"loss is nan at step 3 of trial {trial.number}")

    monkeypatch.setattr(search, "run_trial", diverges)
    with pytest.raises(TextclError, match=r"3 trials of study 'recipe' failed \(the bound: --trials, at least 3; the last, trial 2: TrainingDiverged: loss is nan at step 3"):
        tune(recipe, space, trials=3, out=tmp_path / "bad", pruner="none", compare=False)


def test_a_trial_failed_by_another_process_meanwhile_does_not_crash_its_worker(files, tmp_path, monkeypatch,
                                                                                 capsys):
    """While this process was suspended past the grace period, another one failed its trial (no heartbeat);
    the result that arrives later is reported as not recorded, and the worker goes on."""
    recipe, space = files
    seen = []
    real = search.run_trial

    def failed_meanwhile(trial, *args, **kwargs):
        seen.append(trial.number)
        value = real(trial, *args, **kwargs)
        if len(seen) == 1:
            trial.study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return value

    monkeypatch.setattr(search, "run_trial", failed_meanwhile)
    out = tmp_path / "tune"
    result = tune(recipe, space, trials=1, out=out, pruner="none", compare=False, overrides=["train.max_steps=2"])
    assert [r["state"] for r in result.trials] == ["fail", "complete"]
    assert re.search(r"trial 0 scored -?[0-9.]+ on the dev sets, not recorded: the study had already marked it "
                     r"failed", capsys.readouterr().out)


def test_processes_sharing_an_output_folder_write_it_and_compare_one_at_a_time(files, tmp_path, monkeypatch):
    """Each process that ends its part of a study writes the outputs and runs the final comparison; sharing one
    --out, they take turns (the comparison trains into OUT/final/, which two at once would corrupt)."""
    import threading

    import textcl.tune.tuner as tuner

    recipe, space = files
    out = tmp_path / "tune"
    tune(recipe, space, trials=1, out=out, pruner="none", compare=False, overrides=["train.max_steps=2"])
    inside, overlaps = [], []

    def slow_comparison(*args, **kwargs):
        overlaps.append(len(inside))
        inside.append(1)
        time.sleep(0.5)
        inside.pop()
        return {"skipped": "fake"}

    monkeypatch.setattr(tuner, "final_comparison", slow_comparison)
    job = search.Job(tuner.BaseRecipe.load(recipe, ["train.max_steps=2"]), tuner.load_space(space), "recipe",
                     storage.default_storage(out), str(out), 1, None)
    threads = [threading.Thread(target=tuner.write_outputs, args=(job,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [0, 0]


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ""])
def test_a_study_name_is_a_name_not_a_path(files, tmp_path, name):
    """The default output folder is runs/tune-<study>: a study named like a path would write elsewhere."""
    recipe, space = files
    with pytest.raises(TextclError, match=r"--study: expected a name \(letters, digits"):
        tune(recipe, space, trials=1, study=name, compare=False)


def test_a_trial_failed_by_another_process_during_training_does_not_crash_its_worker(files, tmp_path, monkeypatch,
                                                                                     capsys):
    """Failed by another process while this one trained: its next report to the pruner (or any record) is
    refused by the study; the worker says so and goes on to the next trial."""
    recipe, space = files
    # then it trains, and its report at step 2 is refused
    _on_first_trial(monkeypatch, lambda t: t.study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL))
    result = tune(recipe, space, trials=1, out=tmp_path / "tune", pruner="halving", compare=False,
                  overrides=["train.max_steps=2"])
    assert [r["state"] for r in result.trials] == ["fail", "complete"]
    assert "trial 0 was failed by another process while it ran (no heartbeat for" in capsys.readouterr().out


def test_the_failure_bound_never_stops_a_study_that_reached_its_total(files, tmp_path, monkeypatch):
    """3 failures among 4 completions (--trials 4, bound 4); a rerun asking for 3 finds the study done and
    writes its outputs (the bound of 3 was checked first and refused it before)."""
    from textcl.train import TrainingDiverged

    recipe, space = files
    calls = []
    real = search.run_trial

    def every_other(trial, *args, **kwargs):
        calls.append(trial.number)
        if len(calls) in (1, 3, 5):
            raise TrainingDiverged(f"loss is nan at step 1 of trial {trial.number}")
        return real(trial, *args, **kwargs)

    monkeypatch.setattr(search, "run_trial", every_other)
    out = tmp_path / "tune"
    common = dict(out=out, pruner="none", compare=False, overrides=["train.max_steps=2"])
    result = tune(recipe, space, trials=4, **common)
    assert [r["state"] for r in result.trials] == ["fail", "complete"] * 3 + ["complete"]
    (out / "best.yaml").unlink()
    assert len(tune(recipe, space, trials=3, **common).trials) == 7 and (out / "best.yaml").is_file()


@pytest.mark.parametrize("exc", [
    "ConfigError('train.batch_size', '32 examples make no full optimizer step of batch_size 128')",
    "RuntimeError('[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can\\'t allocate memory: you tried "
    "to allocate 1099511627776 bytes')"])
def test_a_batch_the_data_or_the_memory_cannot_hold_fails_its_trial_alone(files, tmp_path, monkeypatch, exc):
    recipe, space = files
    _on_first_trial(monkeypatch, lambda t: _raise(eval(exc)))
    result = tune(recipe, space, trials=1, out=tmp_path / "tune", pruner="none", compare=False,
                  overrides=["train.max_steps=2"])
    assert [r["state"] for r in result.trials] == ["fail", "complete"]


@pytest.mark.parametrize("stem, study", [("sts v2", "sts-v2"), ("a+b", "a-b"), (".hidden", "hidden")])
def test_a_recipe_file_name_becomes_a_usable_default_study_name(files, tmp_path, stem, study):
    recipe, space = files
    named = tmp_path / f"{stem}.yaml"
    named.write_text(recipe.read_text())
    result = tune(named, space, trials=1, out=tmp_path / "tune", pruner="none", compare=False,
                  overrides=["train.max_steps=2"])
    assert result.study == study


def test_a_setup_error_stops_the_study_at_once_and_a_rerun_is_not_locked_out(files, tmp_path, monkeypatch):
    """An error of the environment (a model or data set that cannot load) is not a trial's result: it stops the
    study at its first trial, uncounted by the failure bound, and the same command reruns once it is mended."""
    from textcl.errors import ModelNotFoundError

    recipe, space = files
    out = tmp_path / "tune"
    common = dict(out=out, pruner="none", compare=False, overrides=["train.max_steps=2"])
    real = search.run_trial
    monkeypatch.setattr(search, "run_trial", lambda *a, **k: _raise(ModelNotFoundError("no model at hub:x")))
    for _ in range(3):
        with pytest.raises(ModelNotFoundError):
            tune(recipe, space, trials=2, **common)
    monkeypatch.setattr(search, "run_trial", real)
    result = tune(recipe, space, trials=2, **common)
    assert [r["state"] for r in result.trials] == ["fail"] * 3 + ["complete"] * 2


def test_a_trial_scored_nan_is_a_failure_and_bounded(files, tmp_path, monkeypatch):
    """A collapsed model scores NaN on its dev set: Optuna fails such a trial on its own, so without counting it
    a space where every trial collapses never ended."""
    recipe, space = files
    calls = []

    def collapses(trial, *args, **kwargs):
        calls.append(trial.number)
        if len(calls) > 20:
            raise RuntimeError("the study did not stop")
        return float("nan")

    monkeypatch.setattr(search, "run_trial", collapses)
    with pytest.raises(TextclError, match=r"3 trials of study 'recipe' failed .*dev score is nan"):
        tune(recipe, space, trials=2, out=tmp_path / "tune", pruner="none", compare=False)
    assert len(calls) == 3


def test_a_fresh_sqlite_study_is_created_under_a_lock(tmp_path, monkeypatch):
    """Two processes opening a fresh SQLite study at once both create Optuna's tables, and one fails (a UNIQUE
    constraint on its version row): the storage is built under an exclusive lock beside the database."""
    import fcntl

    db = tmp_path / "study.sqlite3"
    seen = []

    class Storage:
        def __init__(self, url, **kwargs):
            fd = os.open(tmp_path / "study.sqlite3.init.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
            except BlockingIOError:
                seen.append("held")
            finally:
                os.close(fd)

    monkeypatch.setattr(optuna.storages, "RDBStorage", Storage)
    storage.open_storage(f"sqlite:///{db}")
    assert seen == ["held"]
