"""Specification of the combinators, of ``build_augmenter`` (config → augmenter, errors naming the field),
of ``TokenCutoff`` and of views across DataLoader worker counts."""
from __future__ import annotations

import pytest
import yaml

from textcl.augment import (
    BackTranslation,
    Compose,
    Identity,
    OneOf,
    RandomApply,
    SpanCrop,
    TokenCutoff,
    WordDeletion,
    WordRepetition,
    WordSwap,
    build_augmenter,
    default_pipeline,
    view_seed,
)
from textcl.errors import ConfigError

TEN = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"
SEEDS = list(range(300))


class Tag(WordDeletion):
    """A marker augmenter: appends its tag, so tests can see which branch ran and in which order."""

    name = "tag"

    def __init__(self, tag: str):
        super().__init__(0.0)
        self.tag = tag

    def augment_one(self, text, rng):
        return f"{text} {self.tag}"


# --- combinators -----------------------------------------------------------------------------------------


def test_compose_applies_in_order():
    assert Compose([Tag("x"), Tag("y")])(["a"], [0]) == ["a x y"]


def test_compose_hands_on_the_input_when_a_step_would_empty_it():
    class Blank(Tag):
        def augment_one(self, text, rng):
            return "  "

    assert Compose([Tag("x"), Blank("-"), Tag("y")])(["a"], [0]) == ["a x y"]
    assert Blank("-")(["a"], [0]) == ["a"]


def test_random_apply_probability_extremes_and_rate():
    assert RandomApply(Tag("x"), p=0.0)([TEN] * 5, range(5)) == [TEN] * 5
    assert RandomApply(Tag("x"), p=1.0)(["a"], [0]) == ["a x"]
    applied = sum(v.endswith(" x") for v in RandomApply(Tag("x"), p=0.3)(["a"] * 300, SEEDS))
    assert 60 <= applied <= 120


def test_one_of_picks_by_weight_and_never_a_zero_weight_branch():
    views = OneOf([Tag("x"), Tag("y"), Tag("z")], weights=[3, 0, 1])(["a"] * 300, SEEDS)
    counts = {t: sum(v.endswith(" " + t) for v in views) for t in "xyz"}
    assert counts["y"] == 0 and counts["x"] + counts["z"] == 300
    assert 190 <= counts["x"] <= 260
    assert {v for v in OneOf([Tag("x"), Tag("y")])(["a"] * 50, SEEDS[:50])} == {"a x", "a y"}


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: Compose([]), "augmenters: must name at least one augmenter"),
        (lambda: Compose(WordDeletion()), "augmenters: must be a list of augmenters, got WordDeletion"),
        (lambda: Compose([WordDeletion(), "word_swap"]), r"augmenters\[1\]: is not a text augmenter"),
        (lambda: OneOf([Tag("x")], weights=[1, 2]), "weights: needs one weight per augmenter: 2 for 1"),
        (lambda: OneOf([Tag("x"), Tag("y")], weights=[0, 0]), "weights: must not all be zero"),
        (lambda: OneOf([Tag("x")], weights=[-1]), "weights: must be non-negative numbers"),
        (lambda: RandomApply(Tag("x"), p=1.5), r"p: must be in \[0, 1\], got 1.5"),
        (
            lambda: Compose([TokenCutoff(mode="drop")]),
            r"augmenters\[0\]: TokenCutoff works on token ids after tokenization",
        ),
    ],
)
def test_combinators_reject_bad_arguments(factory, message):
    with pytest.raises(ConfigError, match=message):
        factory()


# --- build_augmenter -------------------------------------------------------------------------------------

RECIPE = """
augment:
  compose:
    - span_crop: {min_ratio: 0.6, max_ratio: 0.9}
    - random_apply:
        p: 0.5
        augmenter: {word_deletion: {rate: 0.1}}
    - one_of:
        augmenters: [word_swap, {word_repetition: {rate: 0.2}}]
        weights: [1, 2]
"""


def test_build_from_yaml_gives_the_same_views_as_the_python_api():
    built = build_augmenter(yaml.safe_load(RECIPE)["augment"])
    by_hand = Compose(
        [
            SpanCrop(0.6, 0.9),
            RandomApply(WordDeletion(0.1), p=0.5),
            OneOf([WordSwap(), WordRepetition(0.2)], weights=[1, 2]),
        ]
    )
    texts = [TEN] * 50
    assert built(texts, SEEDS[:50]) == by_hand(texts, SEEDS[:50])
    assert built.get_config() == by_hand.get_config()


def test_build_shorthands():
    assert isinstance(build_augmenter("identity"), Identity)
    assert build_augmenter({"identity": {"dropout": 0.1}}).dropout == 0.1
    assert build_augmenter({"word_swap": None}).window == 2
    listed = build_augmenter([{"span_crop": {"min_ratio": 0.5}}, "word_deletion"])
    assert isinstance(listed, Compose) and [type(a) for a in listed.augmenters] == [SpanCrop, WordDeletion]
    assert isinstance(build_augmenter({"one_of": ["word_swap", "word_deletion"]}), OneOf)
    cutoff = build_augmenter({"token_cutoff": {"rate": 0.2, "mode": "drop"}})
    assert cutoff.token_level and cutoff.rate == 0.2


@pytest.mark.parametrize(
    "augmenter",
    [
        default_pipeline(),
        OneOf([SpanCrop(0.3, 0.4, level="char"), WordDeletion(0.3)], weights=[1.0, 3.0]),
        RandomApply(WordRepetition(0.4), p=0.7),
        Identity(0.1),
        BackTranslation(via="fr", cache=":memory:", on_miss="original"),
    ],
)
def test_get_config_round_trips_through_build(augmenter):
    rebuilt = build_augmenter(augmenter.get_config())
    assert rebuilt.get_config() == augmenter.get_config()
    assert rebuilt([TEN] * 20, SEEDS[:20]) == augmenter([TEN] * 20, SEEDS[:20])


@pytest.mark.parametrize(
    "config, field, message",
    [
        ({"span_crp": {}}, "augment", "unknown augmenter 'span_crp'; valid names: identity, span_crop,"),
        (
            {"compose": [{"span_crop": {}}, {"random_apply": {"p": 0.5, "augmenter": {"word_deletion": {"rate": 2}}}}]},
            "augment.compose[1].random_apply.augmenter.word_deletion.rate",
            "must be in [0, 1], got 2",
        ),
        ({"word_swap": {"windw": 3}}, "augment.word_swap.windw", "unknown option; valid options: window, level"),
        ({"random_apply": {"p": 0.5}}, "augment.random_apply.augmenter", "is required"),
        ({"random_apply": {"augmenter": "identity", "prob": 1}}, "augment.random_apply.prob", "unknown option"),
        ({"one_of": {"augmenters": ["identity"], "weights": [1, 2]}}, "augment.one_of.weights", "one weight per"),
        ({"compose": []}, "augment.compose", "must be a non-empty list of augmenters"),
        ({"compose": "word_swap"}, "augment.compose", "must be a non-empty list of augmenters"),
        ({"span_crop": {}, "word_swap": {}}, "augment", "must have exactly one key, the augmenter's name"),
        (3, "augment", "must be an augmenter name, a {name: options} mapping or a list; got int"),
        ({"span_crop": [0.5]}, "augment.span_crop", "options must be a mapping"),
        ({"back_translation": {"translator": "x"}}, "augment.back_translation.translator", "unknown option"),
        ({"compose": ["token_cutoff"]}, "augment.compose[0]", "works on token ids after tokenization"),
        ({"one_of": {"augmenters": ["identity", "token_cutoff"]}}, "augment.one_of.augmenters[1]", "token ids"),
        ({"random_apply": {"augmenter": "token_cutoff"}}, "augment.random_apply.augmenter", "token ids"),
        ({"synonym": {"lexicon": {"cat": "kitty"}}}, "augment.synonym.lexicon", "must map words to lists"),
    ],
)
def test_build_errors_name_the_field(config, field, message):
    with pytest.raises(ConfigError) as info:
        build_augmenter(config)
    assert info.value.field == field
    assert message in str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_build_error_for_missing_wordnet_names_the_field(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "nltk", None)
    monkeypatch.setitem(sys.modules, "nltk.corpus", None)
    with pytest.raises(ConfigError, match=r"^augment.synonym: WordNet synonyms need nltk.*textcl\[wordnet\]"):
        build_augmenter({"synonym": {"lexicon": "wordnet"}})


# --- TokenCutoff -----------------------------------------------------------------------------------------


def _batch():
    import torch

    # [CLS] = 101, [SEP] = 102, padding = 0; 10 and 3 real tokens
    ids = torch.tensor(
        [[101, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 102], [101, 21, 22, 23, 102, 0, 0, 0, 0, 0, 0, 0]]
    )
    mask = (ids != 0).long()
    return ids, mask


def test_token_cutoff_mask_mode_masks_round_rate_times_n_real_tokens():
    ids, mask = _batch()
    cutoff = TokenCutoff(rate=0.3, mode="mask", mask_token_id=103, special_token_ids=[101, 102])
    new_ids, new_mask = cutoff(ids, mask, [0, 1])
    assert cutoff.token_level
    assert (new_ids[0] == 103).sum() == 3 and (new_ids[1] == 103).sum() == 1  # round(0.3*10), round(0.3*3)
    assert new_ids[:, 0].tolist() == [101, 101] and new_ids[0, -1] == 102 and new_ids[1, 4] == 102
    assert (new_ids[1, 5:] == 0).all() and new_mask.equal(mask)
    unchanged = new_ids != 103
    assert new_ids[unchanged].equal(ids[unchanged])
    assert new_ids.dtype == ids.dtype and new_ids.shape == ids.shape


def test_token_cutoff_drop_mode_removes_and_right_pads():
    ids, mask = _batch()
    new_ids, new_mask = TokenCutoff(rate=0.5, mode="drop", special_token_ids=[101, 102])(ids, mask, [3, 4])
    assert new_mask.sum(1).tolist() == [12 - 5, 5 - 2]
    for row, new_row, new_m in zip(ids.tolist(), new_ids.tolist(), new_mask.tolist()):
        kept = new_row[: sum(new_m)]
        assert kept[0] == 101 and kept[-1] == 102
        it = iter(row)
        assert all(any(k == t for t in it) for k in kept)  # a subsequence, order kept
        assert new_row[sum(new_m) :] == [0] * (len(row) - sum(new_m))


def test_token_cutoff_attention_mode_only_touches_the_mask():
    ids, mask = _batch()
    new_ids, new_mask = TokenCutoff(rate=0.2, mode="attention", special_token_ids=[101, 102])(ids, mask, [5, 6])
    assert new_ids.equal(ids)
    assert (mask - new_mask).sum(1).tolist() == [2, 1]


def test_token_cutoff_keeps_one_real_token_and_is_seeded_per_row():
    import torch

    ids = torch.tensor([[101, 7, 102], [101, 7, 102]])
    mask = torch.ones_like(ids)
    out, _ = TokenCutoff(rate=0.9, mode="mask", mask_token_id=103, special_token_ids=[101, 102])(ids, mask, [0, 0])
    assert out.equal(ids)  # round(0.9 * 1) = 1 would cut the only real token: none is cut
    ids, mask = _batch()
    cutoff = TokenCutoff(rate=0.3, mode="mask", mask_token_id=103, special_token_ids=[101, 102])
    both = cutoff(ids, mask, [7, 8])[0]
    assert cutoff(ids[1:], mask[1:], [8])[0].equal(both[1:])
    assert cutoff(ids, mask, [7, 8])[0].equal(both)


def test_token_cutoff_binds_ids_from_a_tokenizer(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    batch = tokenizer(["the cat sat on the mat today", "a dog"], padding=True, return_tensors="pt")
    cutoff = build_augmenter({"token_cutoff": {"rate": 0.5}}).with_tokenizer(tokenizer)
    assert cutoff.mask_token_id == tokenizer.mask_token_id
    ids, mask = cutoff(batch["input_ids"], batch["attention_mask"], [1, 2])
    assert (ids == tokenizer.mask_token_id).sum().item() == round(0.5 * 7) + round(0.5 * 2)
    assert ids[:, 0].eq(tokenizer.cls_token_id).all()
    with pytest.raises(ValueError, match=r"with_tokenizer"):
        TokenCutoff(rate=0.5)(batch["input_ids"], batch["attention_mask"], [1, 2])


# --- the seeding contract across DataLoader workers ----------------------------------------------------


class _Texts:
    def __init__(self, texts):
        self.texts = texts

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, index):
        return index, self.texts[index]


class _AugmentingCollate:
    """What a trainer's collate does: two views per example, seeded from (seed, epoch, index, view)."""

    def __init__(self, augmenter, seed, epoch):
        self.augmenter, self.seed, self.epoch = augmenter, seed, epoch

    def __call__(self, items):
        indices, texts = zip(*items)
        return [
            self.augmenter(list(texts), [view_seed(self.seed, self.epoch, i, v) for i in indices])
            for v in (0, 1)
        ]


def _views_with_workers(num_workers, epoch=0):
    from torch.utils.data import DataLoader

    texts = [f"sentence {i} has some words in it to crop and delete" for i in range(24)]
    loader = DataLoader(
        _Texts(texts), batch_size=5, num_workers=num_workers,
        collate_fn=_AugmentingCollate(default_pipeline(), seed=13, epoch=epoch),
    )
    return [view for batch in loader for pair in zip(*batch) for view in pair]


def test_views_are_the_same_with_0_and_2_dataloader_workers():
    single = _views_with_workers(0)
    assert len(single) == 48 and len(set(single)) > 24
    assert _views_with_workers(2) == single
    assert _views_with_workers(0, epoch=1) != single
