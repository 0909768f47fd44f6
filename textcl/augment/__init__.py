"""Text augmentations: the views that contrastive training learns from.

Text augmenters map ``(texts, seeds)`` to views, one seed per text (see :mod:`textcl.augment.base` for
the seeding contract). ``TokenCutoff`` is the exception: it works on token ids after tokenization.
"""
from textcl.augment.backtranslate import BackTranslation, back_translate, back_translate_file, translate_cached
from textcl.augment.base import TextAugmenter, make_views
from textcl.augment.rng import SeedStream, derive_seed, seed_streams, view_seed
from textcl.augment.build import AUGMENTERS, build_augmenter, default_pipeline
from textcl.augment.compose import Compose, OneOf, RandomApply
from textcl.data.readers import read_lines
from textcl.augment.crop import SpanCrop, document_span_pairs, sample_span_pairs
from textcl.augment.cutoff import TokenCutoff
from textcl.augment.edits import WordDeletion, WordRepetition, WordSwap
from textcl.augment.identity import Identity
from textcl.augment.synonym import Synonym, wordnet_lexicon
from textcl.augment.translation_cache import TranslationCache
from textcl.augment.translator import HFTranslator, Translator

__all__ = [
    "AUGMENTERS",
    "BackTranslation",
    "Compose",
    "HFTranslator",
    "Identity",
    "OneOf",
    "RandomApply",
    "SeedStream",
    "SpanCrop",
    "Synonym",
    "TextAugmenter",
    "TokenCutoff",
    "TranslationCache",
    "Translator",
    "WordDeletion",
    "WordRepetition",
    "WordSwap",
    "back_translate",
    "back_translate_file",
    "build_augmenter",
    "default_pipeline",
    "derive_seed",
    "document_span_pairs",
    "make_views",
    "read_lines",
    "sample_span_pairs",
    "seed_streams",
    "translate_cached",
    "view_seed",
    "wordnet_lexicon",
]
