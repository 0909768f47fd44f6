"""The search space of textcl tune: every distribution kind, each bad input named by its field, and the
shipped spaces (recipes/tune-*.yaml) valid against their recipes."""
from pathlib import Path

import optuna
import pytest

from textcl.errors import ConfigError
from textcl.tune.recipe import BaseRecipe
from textcl.tune.space import load_space, parse_space

RECIPES = Path(__file__).parent.parent / "recipes"
PIPELINES = {"dropout": {"identity": {}}, "crop": {"span_crop": {"min_ratio": 0.6, "max_ratio": 0.9}},
             "crop+delete": {"compose": [{"span_crop": {"min_ratio": 0.6, "max_ratio": 0.9}},
                                         {"word_deletion": {"rate": 0.1}}]}}


def test_every_kind_parses_and_samples_within_its_bounds():
    space = parse_space({
        "optim.lr": {"log_uniform": ["1e-5", 1e-4]},  # YAML 1.1 reads 1e-5 as a string
        "loss.temperature": {"uniform": [0.02, 0.1]},
        "train.max_steps": {"int": [100, 400], "step": 100},
        "train.batch_size": {"choice": [32, 64, 128]},
        "data.augment": {"choice": PIPELINES},
    })
    assert space.fields == ["optim.lr", "loss.temperature", "train.max_steps", "train.batch_size", "data.augment"]
    lr, temp, steps, batch, aug = space.params
    assert (lr.kind, lr.low, lr.high) == ("log_uniform", 1e-5, 1e-4)
    assert (steps.kind, steps.step) == ("int", 100)
    assert batch.options == {32: 32, 64: 64, 128: 128} and aug.options == PIPELINES
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = space.sample(study.ask())
        assert 1e-5 <= values["optim.lr"] <= 1e-4 and 0.02 <= values["loss.temperature"] <= 0.1
        assert values["train.max_steps"] in (100, 200, 300, 400) and values["train.batch_size"] in (32, 64, 128)
        assert values["data.augment"] in PIPELINES.values()
    # a study records a pipeline by its name; values() maps the name back to the pipeline
    trial = study.ask()
    sampled = space.sample(trial)
    assert trial.params["data.augment"] in PIPELINES
    assert space.values(trial.params) == sampled


@pytest.mark.parametrize("spec, field, message", [
    ({"optim.lrr": {"uniform": [0, 1]}}, "optim.lrr", "unknown recipe field; expected one of the fields of optim: lr"),
    ({"optimizer.lr": {"uniform": [0, 1]}}, "optimizer.lr", "'optimizer' is not a recipe section"),
    ({"loss.moco.momentm": {"uniform": [0.9, 0.99]}}, "loss.moco.momentm", "expected one of the fields of loss.moco"),
    ({"optim.lr": {"loguniform": [1e-5, 1e-4]}}, "optim.lr.loguniform",
     "unknown distribution; expected one of log_uniform, uniform, int, choice"),
    ({"optim.lr": [1e-5, 1e-4]}, "optim.lr", "expected a distribution"),
    ({"optim.lr": {"uniform": [1e-4], "log_uniform": [1e-5, 1e-4]}}, "optim.lr", "exactly one distribution"),
    ({"optim.lr": {"log_uniform": [0, 1e-4]}}, "optim.lr.log_uniform", "must be positive"),
    ({"optim.lr": {"uniform": [1e-4, 1e-5]}}, "optim.lr.uniform", "expected low < high"),
    ({"optim.lr": {"uniform": ["fast", 1e-5]}}, "optim.lr.uniform", "expected a number, got 'fast'"),
    ({"optim.lr": {"uniform": [1e-5, 1e-4, 1e-3]}}, "optim.lr.uniform", "expected [low, high]"),
    ({"train.max_steps": {"int": [10.5, 20]}}, "train.max_steps.int", "expected two integers"),
    ({"train.max_steps": {"int": [10, 20], "step": 2.5}}, "train.max_steps.step", "expected a positive integer"),
    ({"optim.lr": {"log_uniform": [1e-5, 1e-4], "step": 1e-5}}, "optim.lr.step", "goes with uniform or int"),
    ({"train.batch_size": {"choice": []}}, "train.batch_size.choice", "expected a list of options"),
    ({"train.batch_size": {"choice": [32, 32]}}, "train.batch_size.choice", "listed twice"),
    ({"data.augment": {"choice": [{"identity": {}}]}}, "data.augment.choice", "name options of other shapes"),
    ({"eval.test": {"choice": [["stsb-test"]]}}, "eval.test", "test sets are never used to choose"),
    ({"output_dir": {"choice": ["a", "b"]}}, "output_dir", "cannot be searched"),
    # the whole eval section, or any field of it, would let a trial choose its own scoring sets (a test set)
    ({"eval": {"choice": {"sneaky": {"data": ["stsb-test"], "every": 20}}}}, "eval",
     "cannot be searched: it holds what scores every trial"),
    ({"eval.guard_select": {"choice": [True, False]}}, "eval.guard_select", "cannot be searched"),
    ({"eval.guard": {"choice": [["wiki-sentence-rest"]]}}, "eval.guard", "cannot be searched"),
    ({"eval.every": {"int": [10, 40]}}, "eval.every", "cannot be searched"),
    ({"loss": {"choice": {"a": {}}}, "loss.temperature": {"uniform": [0.02, 0.1]}}, "loss.temperature",
     "overlaps loss"),
])
def test_bad_input_is_named(spec, field, message):
    with pytest.raises(ConfigError) as err:
        parse_space(spec, source="space.yaml")
    assert err.value.field == field and message in err.value.reason
    assert str(err.value).startswith(f"space.yaml: {field}: ")


def test_a_value_the_recipe_refuses_is_named_before_any_trial(tiny_bert_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name: {tiny_bert_dir}}}\ndata: {{path: {tmp_path / 'c.txt'}}}\n")
    (tmp_path / "c.txt").write_text("a b c\nd e f\n")
    base = BaseRecipe.load(recipe)
    negative = parse_space({"loss.temperature": {"uniform": [-0.1, 0.1]}}, source="space.yaml")
    with pytest.raises(ConfigError, match="loss.temperature: uniform value -0.1 makes the recipe invalid: "
                                          "loss.temperature: expected a positive number"):
        negative.check(base.config)
    bad_pipeline = parse_space({"data.augment": {"choice": {"ok": "identity", "typo": {"span_cropp": {}}}}})
    with pytest.raises(ConfigError, match="data.augment: choice value .*span_cropp.* makes the recipe invalid"):
        bad_pipeline.check(base.config)
    fixed = parse_space({"optim.lr": {"log_uniform": [1e-5, 1e-4]}})
    base = BaseRecipe.load(recipe, ["optim.lr=3e-5"])
    with pytest.raises(ConfigError, match="optim.lr: is searched here and fixed by --set optim.lr=3e-5"):
        fixed.check(base.config, fixed=base.fixed_fields())


def test_a_bad_space_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("optim.lr: {log_uniform: [1e-5, 1e-4]\nloss.temperature: 3\n")
    with pytest.raises(ConfigError, match=rf"{path}: .*not valid YAML:\d"):
        load_space(path)
    path.write_text("- optim.lr\n")
    with pytest.raises(ConfigError, match=f"{path}: : expected a mapping of recipe fields to distributions"):
        load_space(path)


@pytest.mark.parametrize("space", sorted(RECIPES.glob("tune-*.yaml")), ids=lambda p: p.name)
def test_shipped_spaces_are_valid_for_their_recipes(space):
    recipe = RECIPES / (space.name[len("tune-"):])
    parsed = load_space(space)
    parsed.check(BaseRecipe.load(recipe).config)
    if space.name == "tune-quickstart.yaml":
        assert parsed.fields == ["loss.temperature", "optim.lr", "data.augment"]
        assert list(parsed.params[2].options) == ["dropout", "crop", "delete", "crop+delete"]
        assert parsed.params[2].options["crop+delete"] == BaseRecipe.load(recipe).data["data"]["augment"]


def test_a_recommendation_recipe_is_tuned_on_its_validation_stage():
    """data.kind interactions selects on its NAME-valid ranking stage: tuning takes it as the dev set."""
    from textcl.config import load_config
    from textcl.tune.tuner import check_dev_sets

    config = load_config(RECIPES / "recommend-ml100k.yaml")
    assert not config.eval.data and not config.eval.retrieval
    check_dev_sets(config)  # refused before: "lists none"
