"""Specification of back-translation: the translation cache (hits, restart, resume after a crash or a
kill), the ``BackTranslation`` augmenter, and the Hugging Face adapter on a tiny random MarianMT model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from textcl.augment import (
    BackTranslation,
    HFTranslator,
    TranslationCache,
    Translator,
    back_translate,
    back_translate_file,
    translate_cached,
)
from textcl.errors import ConfigError, ModelNotFoundError

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

TEXTS = [f"sentence number {i} is here" for i in range(7)]


class FakeTranslator:
    """Deterministic: to German reverses the words, back to English upper-cases them. Records each batch."""

    name = "fake-mt"

    def __init__(self, fail_after: int | None = None):
        self.batches: list[tuple[list[str], str, str]] = []
        self.fail_after = fail_after

    def __call__(self, texts, src, tgt):
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise RuntimeError("translator crashed")
        self.batches.append((list(texts), src, tgt))
        if tgt == "de":
            return [" ".join(reversed(t.split())) for t in texts]
        return [t.upper() for t in texts]

    def translated(self, src, tgt):
        return [t for batch, s, g in self.batches if (s, g) == (src, tgt) for t in batch]


def round_trip(text: str) -> str:
    return " ".join(reversed(text.split())).upper()


def test_fake_translator_satisfies_the_protocol():
    assert isinstance(FakeTranslator(), Translator)


def test_translate_cached_batches_dedupes_and_skips_blanks():
    fake = FakeTranslator()
    out = translate_cached(["a b", "", "c d", "a b", " ", "e"], fake, "en", "de", batch_size=2)
    assert out == ["b a", "", "d c", "b a", " ", "e"]
    assert [len(b) for b, _, _ in fake.batches] == [2, 1]


def test_back_translate_round_trips_and_caches_both_legs(tmp_path):
    fake = FakeTranslator()
    with TranslationCache(tmp_path / "bt.sqlite") as cache:
        views = back_translate(TEXTS, fake, via="de", cache=cache, batch_size=3)
        assert views == [round_trip(t) for t in TEXTS]
        assert len(cache) == 2 * len(TEXTS)
        assert [len(b) for b, _, _ in fake.batches] == [3, 3, 1, 3, 3, 1]
        again = FakeTranslator()
        assert back_translate(TEXTS, again, via="de", cache=cache) == views
        assert again.batches == []  # every sentence came from the cache


def test_cache_survives_a_restart_and_is_keyed_by_model_and_direction(tmp_path):
    path = tmp_path / "sub" / "bt.sqlite"
    with TranslationCache(path) as cache:
        back_translate(TEXTS, FakeTranslator(), via="de", cache=cache)
    reopened = TranslationCache(path)
    fake = FakeTranslator()
    assert back_translate(TEXTS, fake, via="de", cache=reopened) == [round_trip(t) for t in TEXTS]
    assert fake.batches == []
    other_model = FakeTranslator()
    other_model.name = "other-mt"
    back_translate(TEXTS[:2], other_model, via="de", cache=reopened)
    assert len(other_model.translated("en", "de")) == 2
    assert reopened.get_many(["never seen"], "fake-mt", "en-de") == [None]
    assert reopened.get_many([TEXTS[0]], "fake-mt", "de-en") == [None]  # direction is part of the key
    reopened.close()


def test_resume_after_a_crash_translates_only_the_rest(tmp_path):
    path = tmp_path / "bt.sqlite"
    crashing = FakeTranslator(fail_after=2)
    with TranslationCache(path) as cache, pytest.raises(RuntimeError, match="translator crashed"):
        back_translate(TEXTS, crashing, via="de", cache=cache, batch_size=2)
    with TranslationCache(path) as cache:
        assert len(cache) == 4  # the two batches done before the crash were committed
        resumed = FakeTranslator()
        assert back_translate(TEXTS, resumed, via="de", cache=cache, batch_size=2) == [round_trip(t) for t in TEXTS]
    assert resumed.translated("en", "de") == TEXTS[4:]
    assert len(resumed.translated("de", "en")) == len(TEXTS)


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from textcl.augment import TranslationCache, back_translate_file

    class KilledAfterTwoBatches:
        name = "fake-mt"
        calls = 0
        def __call__(self, texts, src, tgt):
            KilledAfterTwoBatches.calls += 1
            if KilledAfterTwoBatches.calls > 2:
                os.kill(os.getpid(), signal.SIGKILL)
            if tgt == "de":
                return [" ".join(reversed(t.split())) for t in texts]
            return [t.upper() for t in texts]

    back_translate_file(sys.argv[1], sys.argv[2], KilledAfterTwoBatches(), via="de",
                        cache=TranslationCache(sys.argv[3]), batch_size=2, progress=False)
    """
)


def test_resume_after_a_kill_loses_nothing_already_translated(tmp_path):
    corpus, out, cache_path = tmp_path / "corpus.txt", tmp_path / "para.txt", tmp_path / "bt.sqlite"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(corpus), str(out), str(cache_path)], capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()
    assert not out.exists()  # the output appears only once complete
    with TranslationCache(cache_path) as cache:
        assert len(cache) == 4  # chunk 1 (2 sentences) both ways: committed before the kill
        resumed = FakeTranslator()
        assert back_translate_file(corpus, out, resumed, via="de", cache=cache, batch_size=2, progress=False) == 7
    assert resumed.translated("en", "de") == TEXTS[2:]
    assert out.read_text(encoding="utf-8").splitlines() == [round_trip(t) for t in TEXTS]


def test_back_translate_file_keeps_blank_lines_and_alignment(tmp_path):
    corpus, out = tmp_path / "c.txt", tmp_path / "o.txt"
    corpus.write_text("a b\n\nc d\r\n", encoding="utf-8")
    assert back_translate_file(corpus, out, FakeTranslator(), progress=False) == 3
    assert out.read_text(encoding="utf-8") == "B A\n\nD C\n"


def test_a_translator_returning_the_wrong_count_is_an_error():
    with pytest.raises(ValueError, match="returned 1 texts for a batch of 2"):
        translate_cached(["a", "b"], lambda texts, src, tgt: ["x"], "en", "de")


# --- the BackTranslation augmenter -----------------------------------------------------------------------


def test_back_translation_augmenter_gives_the_paraphrase_whatever_the_seed(tmp_path):
    aug = BackTranslation(FakeTranslator(), via="de", cache=tmp_path / "bt.sqlite")
    assert aug(["a b c", "  "], [1, 2]) == ["C B A", "  "]
    assert aug(["a b c"], [99]) == ["C B A"]
    empty = BackTranslation(lambda texts, src, tgt: [""] * len(texts), via="de")
    assert empty(["a b"], [0]) == ["a b"]  # a blank paraphrase: the original


def test_back_translation_reads_a_precomputed_cache_without_a_model(tmp_path):
    path = tmp_path / "bt.sqlite"
    fake = FakeTranslator()
    fake.model_id = lambda src, tgt: f"Helsinki-NLP/opus-mt-{src}-{tgt}"  # as the default translator names it
    with TranslationCache(path) as cache:
        back_translate(TEXTS[:3], fake, via="de", cache=cache)
    aug = BackTranslation(via="de", cache=str(path), on_miss="original")
    assert aug(TEXTS[:4], range(4)) == [round_trip(t) for t in TEXTS[:3]] + [TEXTS[3]]
    strict = BackTranslation(via="de", cache=str(path), on_miss="error")
    with pytest.raises(LookupError, match="no cached back-translation via 'de' for 'sentence number 3"):
        strict(TEXTS[:4], range(4))
    with pytest.raises(ConfigError, match="cache: on_miss 'original' reads precomputed paraphrases"):
        BackTranslation(via="de", on_miss="original")
    with pytest.raises(ConfigError, match="via: must be a language code other than src"):
        BackTranslation(src="en", via="en")


# --- the Hugging Face adapter on a tiny random MarianMT -----------------------------------------------

SPM_SENTENCES = [
    "The cat sat on the mat.",
    "A man is playing a guitar.",
    "Der Hund schläft im Garten.",
    "Ein Mann spielt Gitarre.",
    "the quick brown fox jumps over the lazy dog",
    "Wikipedia is a free online encyclopedia.",
]


@pytest.fixture(scope="module")
def tiny_marian_dir(tmp_path_factory):
    """A randomly initialised 1-layer MarianMT and a real MarianTokenizer (sentencepiece trained here)."""
    spm = pytest.importorskip("sentencepiece")
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    work = tmp_path_factory.mktemp("tiny-marian")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_SENTENCES * 5), model_prefix=str(work / "spm"), vocab_size=80,
        model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
        bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_file=str(work / "spm.model"))
    vocab = {"</s>": 0, "<unk>": 1, "<pad>": 2}
    for i in range(processor.get_piece_size()):
        vocab.setdefault(processor.id_to_piece(i), len(vocab))
    (work / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = MarianTokenizer(str(work / "spm.model"), str(work / "spm.model"), str(work / "vocab.json"))
    config = MarianConfig(
        vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=2, eos_token_id=0, decoder_start_token_id=2, forced_eos_token_id=0,
    )
    torch.manual_seed(0)
    out = work / "model"
    MarianMTModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _count_generate(translator, src, tgt):
    _, model = translator._load(src, tgt)
    calls = []
    original = model.generate

    def counting(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    model.generate = counting
    return calls


def test_hf_translator_generates_in_batches_of_its_own_size(tiny_marian_dir):
    translator = HFTranslator.pivot(
        "en", "de", tiny_marian_dir, tiny_marian_dir, batch_size=3, device="cpu", max_length=8
    )
    calls = _count_generate(translator, "en", "de")
    out = translator(SPM_SENTENCES + ["A cat."], "en", "de")
    assert calls == [3, 3, 1]
    assert len(out) == 7 and all(isinstance(t, str) for t in out)
    assert translator(SPM_SENTENCES + ["A cat."], "en", "de") == out  # greedy decoding: deterministic
    _, model = translator._load("en", "de")
    assert model.device.type == "cpu" and not model.training
    assert translator.model_id("de", "en") == os.fspath(tiny_marian_dir)
    assert translator([], "en", "de") == []


def test_hf_translator_with_the_cache_loads_no_model_the_second_time(tiny_marian_dir, tmp_path):
    with TranslationCache(tmp_path / "bt.sqlite") as cache:
        first = HFTranslator.pivot("en", "de", tiny_marian_dir, tiny_marian_dir, batch_size=4, max_length=8)
        views = BackTranslation(first, via="de", cache=cache)(SPM_SENTENCES, range(6))
        second = HFTranslator.pivot("en", "de", tiny_marian_dir, tiny_marian_dir, batch_size=4, max_length=8)
        assert BackTranslation(second, via="de", cache=cache)(SPM_SENTENCES, range(6)) == views
        assert second._loaded == {}  # all from the cache
    assert all(v.strip() for v in views)


def test_hf_translator_errors():
    translator = HFTranslator.pivot("en", "de", "/no/such/model-dir", "/no/such/model-dir")
    assert translator.models[("en", "de")] == "/no/such/model-dir"
    assert HFTranslator.pivot("en", "fr").models == {
        ("en", "fr"): "Helsinki-NLP/opus-mt-en-fr",
        ("fr", "en"): "Helsinki-NLP/opus-mt-fr-en",
    }
    with pytest.raises(ConfigError, match="no model translates en->it; this translator has en->de, de->en"):
        translator(["x"], "en", "it")
    with pytest.raises(ModelNotFoundError, match="cannot load the en->de translation model '/no/such/model-dir'"):
        translator(["x"], "en", "de")
    with pytest.raises(ConfigError, match="batch_size: must be an integer >= 1, got 0"):
        HFTranslator({("en", "de"): "m"}, batch_size=0)


def test_backtranslate_command_writes_aligned_paraphrases_and_resumes_from_its_cache(
    tiny_marian_dir, tmp_path, monkeypatch, capsys
):
    from textcl.cli import main

    corpus, out = tmp_path / "corpus.txt", tmp_path / "para.txt"
    corpus.write_text("\n".join(SPM_SENTENCES[:5]) + "\n", encoding="utf-8")
    argv = [
        "augment", "backtranslate", "--input", str(corpus), "--via", "de", "--out", str(out),
        "--model-forward", str(tiny_marian_dir), "--model-backward", str(tiny_marian_dir),
        "--batch-size", "2", "--device", "cpu", "--max-length", "8", "--no-progress",
    ]
    assert main(argv) == 0
    assert f"wrote 5 paraphrases to {out}" in capsys.readouterr().out
    first = out.read_text(encoding="utf-8").splitlines()
    assert len(first) == 5 and all(line.strip() for line in first)
    model = os.fspath(tiny_marian_dir)
    with TranslationCache(f"{out}.cache.sqlite") as cache:
        pivots = cache.get_many(SPM_SENTENCES[:5], model, "en-de")
        assert None not in pivots and None not in cache.get_many(pivots, model, "de-en")
        assert len(cache) == 5 + len(set(pivots))  # the random model's identical outputs are cached once

    import transformers

    def no_model(*args, **kwargs):
        raise AssertionError("everything is cached: no model should load")

    monkeypatch.setattr(transformers.AutoModelForSeq2SeqLM, "from_pretrained", no_model)
    out.unlink()
    assert main(argv) == 0
    assert out.read_text(encoding="utf-8").splitlines() == first
    assert main(argv[:4] + ["--via", "en", "--out", str(out)]) == 2
    assert "--via: must differ from --src" in capsys.readouterr().err
