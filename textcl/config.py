"""Training recipes as typed dataclasses, loaded from YAML and validated once.

A recipe maps one-to-one onto :class:`TrainConfig`: each YAML section is a nested dataclass. Unknown keys,
wrong types, out-of-range values and missing files raise :class:`~textcl.errors.ConfigError` naming the
field by its dotted path (``loss.temperature``). ``--set a.b=value`` overrides parse ``value`` as YAML.
"""
from __future__ import annotations

import copy
import math
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from textcl.errors import ConfigError, DataFormatError


@dataclass
class ModelConfig:
    """The encoder to train."""

    name: str = "sentence-transformers/all-MiniLM-L6-v2"  #: local folder or hub name
    pooling: Optional[str] = None  #: None keeps the folder's pooling (mean for a plain HF folder)
    mlp_head: bool = False  #: the SimCSE MLP head, used in training only
    max_seq_len: int = 32  #: training inputs are truncated to this; evaluation uses the model's own limit
    #: the length the saved model encodes at: auto (the default) scores the dev sets at max_seq_len and at the
    #: model's own limit after training and saves the better; true saves (and evaluates at) max_seq_len; false
    #: keeps the model's own limit
    save_max_seq_len: Any = "auto"
    dropout: Optional[float] = None  #: override hidden and attention dropout (None: the model's own)
    #: training on the CPU, draw dropout masks with numpy's SFC64 instead of torch's one-at-a-time Bernoulli: the
    #: same distribution, 2.6x cheaper masks, 1.1-1.2x faster steps (textcl.models.dropout); no effect on GPUs
    fast_dropout: bool = True
    two_tower: bool = False  #: separate query (anchor) and document (positive/negative) encoders


@dataclass
class DataConfig:
    """Training data.

    ``kind``: ``unlabeled`` (one text per example; both views come from it), ``pairs`` (anchor, positive),
    ``triples`` (anchor, positive, hard negative) or ``scored`` (sentence1, sentence2 and a graded score, for
    ``loss.name: cosent`` or ``angle``).
    ``path``: a ``.txt`` (one text per line), ``.jsonl``, ``.csv``/``.tsv`` file; ``packaged:wiki`` (the
    packaged Wikipedia sentences); or ``hf:NAME[:SPLIT]`` for a hub dataset. For ``scored``: any STS layout
    that ``textcl eval sts`` reads, or a named set such as ``stsb-train``.
    """

    kind: str = "unlabeled"
    path: str = "packaged:wiki"
    text_field: str = "text"
    anchor_field: str = "anchor"
    positive_field: str = "positive"
    negative_field: str = "negative"
    group_field: Optional[str] = None  #: a field/column whose equal values mark pairs that are not negatives
    max_examples: Optional[int] = None
    augment: Any = None  #: a textcl.augment config (dict/list/name); None = identical texts (dropout views)
    token_augment: Any = None  #: a token-level augmenter (token_cutoff), applied after tokenization
    group_by_length: bool = True
    #: a general-domain term in every step (``textcl.train.mix``): InfoNCE on dropout views of texts from another
    #: source, added to the task's loss with a weight, to keep what the model knew off the task's domain
    mix: Optional["MixConfig"] = None
    #: ``data.kind: interactions``: how a log of (user, item, timestamp) becomes training rows (textcl.recommend)
    interactions: Optional["InteractionsConfig"] = None


@dataclass
class InteractionsConfig:
    """Recommendation from an interaction log (``data.kind: interactions``, ``data.path`` the log or
    ``packaged:ml100k``): each training row is a user's recent history (as text, most recent item first) and
    the item they picked next; evaluation ranks every item of the catalogue (leave-one-out in time order)."""

    items: Optional[str] = None  #: the item catalogue (RecBole .item, CSV/TSV, JSONL); packaged:ml100k brings its own
    template: str = "{movie_title} ({release_year}). {class}"  #: an item's text, from its catalogue fields
    history: int = 10  #: items in a user's history text, most recent first
    separator: str = " | "  #: between the history's item texts
    cold_fraction: float = 0.0  #: items held out of training (all their interactions), ranked for cold start
    cold_seed: int = 0
    logq_correction: bool = True  #: subtract each in-batch item's log sampling probability (Yi et al. 2019)
    mask_hits: bool = True  #: an item that is the row's own item or in its user's history is not a negative
    #: batch: the other rows' items; catalogue: also a softmax of each user over every training item's cached vector
    negatives: str = "batch"
    catalogue_refresh: int = 50  #: negatives catalogue: re-embed the catalogue every this many steps
    name: Optional[str] = None  #: the evaluation rows' prefix (NAME-valid, NAME-test, NAME-cold); default from the log
    #: text: the encoder reads the history as text and trains end to end; sequence: a GRU over the frozen
    #: encoder's item vectors plus id embeddings (textcl.recommend.sequence), trained in epochs
    user_tower: str = "text"
    sequence: Optional["SequenceConfig"] = None  #: the sequence user tower's sizes (user_tower: sequence)


@dataclass
class SequenceConfig:
    """The sequence user tower (:mod:`textcl.recommend.sequence`): items are ``W x + e`` (d,), users a GRU over
    their last ``data.interactions.history`` items."""

    dim: int = 64  #: d, the shared user and item space
    hidden: int = 128  #: the GRU's units
    dropout: float = 0.3  #: on the history's item vectors
    id_embeddings: bool = True  #: add a learned vector per item seen in training (cold items: text alone)


@dataclass
class MixConfig:
    path: str = "packaged:wiki"  #: unlabeled texts, as data.path reads them (a .txt/.jsonl file, packaged:wiki, hf:)
    weight: float = 1.0  #: the term's weight beside the task's loss
    batch_size: int = 16  #: texts per step (each process), drawn anew each step from (seed, step, process)
    temperature: float = 0.05  #: objectives infonce and pairs
    #: infonce: InfoNCE on two dropout views of each text (SimCSE on general text); pairs: InfoNCE over (query,
    #: passage) pairs (packaged:wiki: description -> lead, first sentence -> rest of lead; a file: its pairs);
    #: distill: keep each text's vector where the starting weights put it, ``weight * mean(1 - cos(student, start))``
    objective: str = "infonce"


@dataclass
class MoCoConfig:
    momentum: float = 0.999
    queue_size: int = 4096


@dataclass
class AngleConfig:
    """AnglE's terms (:class:`textcl.losses.AnglE`): CoSENT in cosine and in angle space, and in-batch InfoNCE
    over the pairs scored at least ``ibn_min_score``."""

    cosine_weight: float = 1.0
    angle_weight: float = 1.0
    ibn_weight: float = 1.0
    ibn_scale: float = 20.0
    ibn_min_score: float = 4.0


@dataclass
class MatryoshkaConfig:
    """Train every prefix of the embedding: the loss is ``sum_d weights[d] * loss(embeddings[:, :d])``."""

    dims: list = field(default_factory=lambda: [384, 256, 128, 64, 32])
    weights: Optional[list[float]] = None  #: one per dimension; None = all 1


@dataclass
class GuideConfig:
    """GISTEmbed's guided filtering: a frozen guide encoder drops in-batch candidates it rates above the
    anchor's positive (minus ``margin``) from the negatives."""

    model: str = "self"  #: a model name or path; ``self`` = a frozen copy of the starting model
    margin: float = 0.0


@dataclass
class LossConfig:
    temperature: float = 0.05
    similarity: str = "cosine"
    symmetric: bool = False
    nt_xent: bool = False
    hard_negative_weight: float = 0.0
    learnable_temperature: bool = False
    gather_across_devices: bool = False
    mask_false_negatives: bool = True  #: identical texts in the batch are not negatives of each other
    cached: bool = False  #: GradCache: negatives from the whole batch, memory of one mini-batch
    #: GradCache's rows per forward: a positive integer, or auto: the largest that fits the device's free memory,
    #: measured on the data's longest rows (textcl.models.memory; $TEXTCL_MEMORY_LIMIT caps it)
    mini_batch_size: Any = 32
    moco: Optional[MoCoConfig] = None
    name: str = "infonce"  #: infonce (pairs, triples, unlabeled) or, for data.kind scored, cosent / angle
    scale: float = 20.0  #: CoSENT and AnglE: multiplies similarity differences
    angle: AngleConfig = field(default_factory=AngleConfig)
    matryoshka: Optional[MatryoshkaConfig] = None
    guide: Optional[GuideConfig] = None


@dataclass
class OptimConfig:
    lr: float = 3e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    scheduler: str = "linear"  #: linear (warmup then linear decay) or constant (after warmup)
    max_grad_norm: Optional[float] = 1.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    #: AdamW's fused kernel (one pass over all parameters; CUDA, and the CPU from torch 2.4; the Hugging Face
    #: trainer's default optimizer, adamw_torch_fused) instead of a loop over parameter tensors; the same update
    #: up to float rounding, and ~110 ms less per step for MiniLM on 2 CPU cores (benchmarks/RESULTS.md)
    fused: bool = True
    #: exponential moving average of the weights (``textcl.train.ema``): evaluation, best-step selection and
    #: the saved model use the average with this decay; 0 = off
    ema_decay: float = 0.0
    #: pull towards the starting weights after each step, ``w -= lr * l2_start * (w - w0)`` (decoupled L2-SP,
    #: ``textcl.train.anchor``): keeps more of what the starting model knew off the training domain; 0 = off
    l2_start: float = 0.0


@dataclass
class EvalConfig:
    data: list = field(default_factory=lambda: ["stsb-dev"])  #: STS sets evaluated during training
    test: list = field(default_factory=lambda: ["stsb-test"])  #: reported before and after, never selected on
    retrieval: list = field(default_factory=list)  #: BEIR folders whose nDCG@10 joins the selection score
    every: int = 125  #: steps between evaluations (0: only before and after)
    select_best: bool = True  #: the final model is the best on ``data`` (SimCSE protocol)
    batch_size: int = 128
    before: bool = True  #: evaluate the untrained model too
    #: guard sets (textcl.eval.guards): off-domain STS or retrieval sets scored before, at every evaluation and
    #: after, reported with their change; they never join the selection score unless ``guard_select``
    guard: list = field(default_factory=list)
    guard_tolerance: float = 1.0  #: points a guard may fall below its starting score before the run says so
    guard_select: bool = False  #: let the guard sets join the selection score of the best step


@dataclass
class TrainSection:
    batch_size: int = 64
    epochs: int = 1
    max_steps: Optional[int] = None
    grad_accum: int = 1
    mixed_precision: str = "no"  #: no, fp16, bf16, or auto (bf16 where the device has it natively, else no)
    #: torch threads; None: the free cores, re-measured as the run goes (textcl.threads); a number pins them,
    #: for runs repeatable bit for bit (a different thread count sums in a different order)
    threads: Optional[int] = None
    #: WiSE-FT (textcl.models.merge): after training, save (1 - a) * starting weights + a * trained weights;
    #: a number in [0, 1], "auto" (a on a grid: the best selection score among the a whose guards all stay
    #: within eval.guard_tolerance of the starting model's, ties to the larger a; never a test set), or None
    #: to save the trained weights
    wise_alpha: Any = None
    seed: int = 42
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 10
    report_to: Any = "auto"  #: "auto" (tensorboard/wandb when installed), "none", or a list of trackers
    plot: bool = True


@dataclass
class TrainConfig:
    """A whole training recipe."""

    name: str = "run"
    output_dir: str = "runs/run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, source: str | None = None) -> "TrainConfig":
        """Check ranges, choices and files; raise :class:`ConfigError` naming the first bad field."""
        from textcl.models.pooling import POOLING_MODES

        def bad(path, msg):
            raise ConfigError(path, msg, source)

        def choice(path, value, options):
            if value not in options:
                bad(path, f"expected one of {', '.join(map(str, options))}, got {value!r}")

        def is_number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        def positive(path, value, allow_zero=False):
            if not is_number(value) or value < 0 or (value == 0 and not allow_zero):
                bad(path, f"expected a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")

        def finite(path, value):
            if not is_number(value):
                bad(path, f"expected a finite number, got {value!r}")

        m, d, lo, o, e, t = self.model, self.data, self.loss, self.optim, self.eval, self.train
        if m.pooling is not None:
            choice("model.pooling", m.pooling, POOLING_MODES)
        positive("model.max_seq_len", m.max_seq_len)
        if m.save_max_seq_len not in (True, False, "auto"):
            bad("model.save_max_seq_len", f"expected true, false or auto, got {m.save_max_seq_len!r}")
        if m.dropout is not None and not 0.0 <= m.dropout < 1.0:
            bad("model.dropout", f"expected a rate in [0, 1), got {m.dropout!r}")
        choice("data.kind", d.kind, ("unlabeled", "pairs", "triples", "scored", "interactions"))
        if d.kind == "interactions":
            self._check_interactions(bad, positive)
        elif d.interactions is not None:
            bad("data.interactions", f"configures data.kind interactions, not {d.kind!r}")
        if d.max_examples is not None:
            positive("data.max_examples", d.max_examples)
        from textcl.data.sts import KNOWN_SETS

        if d.kind == "scored" and d.path in KNOWN_SETS:
            pass
        elif not (d.path.startswith(("packaged:", "hf:"))):
            if not Path(d.path).expanduser().is_file():
                bad("data.path", f"file {d.path!r} does not exist (expected a .txt/.jsonl/.csv/.tsv file, "
                                 "packaged:wiki, or hf:NAME[:SPLIT])")
        elif d.path.startswith("packaged:"):
            choice("data.path", d.path, ("packaged:ml100k",) if d.kind == "interactions" else ("packaged:wiki",))
        if d.mix is not None:
            if not d.mix.path.startswith(("packaged:", "hf:")) and not Path(d.mix.path).expanduser().is_file():
                bad("data.mix.path", f"file {d.mix.path!r} does not exist (expected a .txt/.jsonl file of texts "
                                     "(objective pairs: of pairs), packaged:wiki, or hf:NAME[:SPLIT])")
            if d.mix.path.startswith("packaged:"):
                choice("data.mix.path", d.mix.path, ("packaged:wiki",))
            if d.mix.objective == "pairs" and Path(d.mix.path).suffix.lower() == ".txt":
                bad("data.mix.path", f"objective pairs reads (anchor, positive) rows; {d.mix.path!r} is a text file of "
                                     "single texts (expected .jsonl, .csv, .tsv, packaged:wiki or hf:NAME[:SPLIT])")
            choice("data.mix.objective", d.mix.objective, ("infonce", "pairs", "distill"))
            if d.mix.objective == "distill" and self.model.mlp_head:
                bad("data.mix.objective", "distill compares pooled vectors with the starting model's, and "
                                          "model.mlp_head puts a training-only head on the student's; set "
                                          "objective: infonce or model.mlp_head: false")
            positive("data.mix.weight", d.mix.weight)
            positive("data.mix.temperature", d.mix.temperature)
            if d.mix.objective == "distill" and d.mix.temperature != MixConfig().temperature:
                bad("data.mix.temperature", f"is set ({d.mix.temperature!r}) but objective distill has no softmax "
                                            "(it reads weight and batch_size); drop it, or set objective infonce "
                                            "or pairs")
            if d.mix.objective in ("infonce", "pairs") and d.mix.batch_size < 2:
                bad("data.mix.batch_size", f"in-batch negatives need at least 2 texts, got {d.mix.batch_size!r}")
            if d.mix.batch_size < 1:
                bad("data.mix.batch_size", f"expected at least 1 text a step, got {d.mix.batch_size!r}")
            if self.loss.cached or self.loss.moco is not None:
                bad("data.mix", "runs beside plain steps; it does not combine with loss.cached or loss.moco")
        if d.augment is not None or d.token_augment is not None:
            from textcl.augment import build_augmenter

            for name in ("augment", "token_augment"):
                spec = getattr(d, name)
                if spec is None:
                    continue
                try:
                    aug = build_augmenter(spec, field=f"data.{name}")
                except ConfigError as exc:
                    raise ConfigError(exc.field, exc.reason, source) from None
                if getattr(aug, "token_level", False) != (name == "token_augment"):
                    bad(f"data.{name}", "token_cutoff goes in data.token_augment; text augmenters in data.augment")
        choice("loss.name", lo.name, ("infonce", "cosent", "angle"))
        if (d.kind == "scored") != (lo.name in ("cosent", "angle")):
            bad("loss.name" if d.kind != "scored" else "data.kind",
                f"loss.name {lo.name!r} with data.kind {d.kind!r}: cosent and angle learn from graded scores "
                "(data.kind: scored); infonce learns from unlabeled texts, pairs or triples")
        positive("loss.scale", lo.scale)
        for name in ("cosine_weight", "angle_weight", "ibn_weight"):
            positive(f"loss.angle.{name}", getattr(lo.angle, name), allow_zero=True)
        positive("loss.angle.ibn_scale", lo.angle.ibn_scale)
        finite("loss.angle.ibn_min_score", lo.angle.ibn_min_score)
        if lo.name == "angle" and not (lo.angle.cosine_weight or lo.angle.angle_weight or lo.angle.ibn_weight):
            bad("loss.angle", "every weight is 0; give at least one term a positive weight")
        if lo.matryoshka is not None:
            dims, weights = lo.matryoshka.dims, lo.matryoshka.weights
            if not dims or not all(isinstance(x, int) and x > 0 for x in dims) or len(set(dims)) != len(dims):
                bad("loss.matryoshka.dims", f"expected distinct positive integers, e.g. [384, 256, 128, 64], got {dims!r}")
            if weights is not None and (not isinstance(weights, (list, tuple)) or len(weights) != len(dims)
                                        or not all(is_number(w) and w >= 0 for w in weights)):
                bad("loss.matryoshka.weights", f"expected {len(dims)} non-negative weights (one per dimension), got {weights!r}")
        if lo.guide is not None:
            if lo.name != "infonce":
                bad("loss.guide", "guided filtering chooses in-batch negatives; it applies to loss.name infonce")
            if lo.moco is not None or lo.nt_xent:
                bad("loss.guide", "guided filtering does not combine with MoCo or NT-Xent")
            if not isinstance(lo.guide.model, str) or not lo.guide.model:
                bad("loss.guide.model", "expected a model name or path, or 'self' for the starting model")
            finite("loss.guide.margin", lo.guide.margin)
        if d.kind == "scored":
            for name in ("cached", "symmetric", "nt_xent", "learnable_temperature", "gather_across_devices"):
                if getattr(lo, name):
                    bad(f"loss.{name}", f"is an InfoNCE option; loss.name {lo.name} does not use it")
            if lo.moco is not None:
                bad("loss.moco", "MoCo is an InfoNCE variant; scored data trains with cosent or angle")
        positive("loss.temperature", lo.temperature)
        choice("loss.similarity", lo.similarity, ("cosine", "dot", "euclidean"))
        positive("loss.hard_negative_weight", lo.hard_negative_weight, allow_zero=True)
        mb = lo.mini_batch_size
        if mb != "auto" and not (isinstance(mb, int) and not isinstance(mb, bool) and mb >= 1):
            bad("loss.mini_batch_size", f"expected a positive integer or auto, got {mb!r}")
        if lo.nt_xent and d.kind == "triples":
            bad("loss.nt_xent", "NT-Xent takes no hard negatives; use data.kind pairs/unlabeled or nt_xent: false")
        if lo.moco is not None:
            if not 0.0 <= lo.moco.momentum < 1.0:
                bad("loss.moco.momentum", f"expected a value in [0, 1), got {lo.moco.momentum!r}")
            positive("loss.moco.queue_size", lo.moco.queue_size)
            if lo.cached:
                bad("loss.cached", "GradCache and MoCo do not combine; MoCo already decouples negatives from memory")
            if d.kind == "triples":
                bad("data.kind", "MoCo contrasts against its queue and takes no hard negatives; use pairs or unlabeled")
            for name in ("symmetric", "nt_xent", "learnable_temperature", "gather_across_devices"):
                if getattr(lo, name):
                    bad(f"loss.{name}", "is not used with MoCo (its loss is one-directional InfoNCE against the queue)")
            if m.two_tower:
                bad("model.two_tower", "MoCo's key encoder is a momentum copy; two_tower does not combine with it")
        self._refuse_unused(bad)
        positive("optim.lr", o.lr)
        positive("optim.weight_decay", o.weight_decay, allow_zero=True)
        if not 0.0 <= o.warmup_ratio < 1.0:
            bad("optim.warmup_ratio", f"expected a ratio in [0, 1), got {o.warmup_ratio!r}")
        choice("optim.scheduler", o.scheduler, ("linear", "constant"))
        if o.max_grad_norm is not None:
            positive("optim.max_grad_norm", o.max_grad_norm)
        if not isinstance(o.betas, (list, tuple)) or len(o.betas) != 2 or not all(is_number(b) and 0 <= b < 1
                                                                                   for b in o.betas):
            bad("optim.betas", f"expected two numbers in [0, 1), got {o.betas!r}")
        positive("optim.eps", o.eps)
        positive("optim.l2_start", o.l2_start, allow_zero=True)
        if o.lr * o.l2_start > 1 + 1e-9:
            # the pull moves w by lr * l2_start of its distance to w0: past w0 (and oscillating) above 1
            bad("optim.l2_start", f"expected optim.lr * l2_start <= 1 (the pull would overshoot the starting "
                                  f"weights), got {o.lr!r} * {o.l2_start!r} = {o.lr * o.l2_start:g}")
        if not 0.0 <= o.ema_decay < 1.0:
            bad("optim.ema_decay", f"expected a decay in [0, 1) (0 = no weight average), got {o.ema_decay!r}")
        for i, folder in enumerate(e.retrieval):
            if not (Path(str(folder)).expanduser() / "corpus.jsonl").is_file():
                bad(f"eval.retrieval[{i}]", f"{folder!r} is not a BEIR folder (no corpus.jsonl)")
        if not isinstance(e.guard, list) or not all(isinstance(g, str) and g for g in e.guard):
            bad("eval.guard", f"expected a list of set names, STS files or BEIR folders, got {e.guard!r}")
        from textcl.eval.guards import BUILTIN_GUARDS, WIKI_GUARDS

        for i, g in enumerate(e.guard):
            if g not in BUILTIN_GUARDS and g not in KNOWN_SETS and not Path(g).expanduser().exists():
                bad(f"eval.guard[{i}]", f"{g!r} is no built-in guard ({', '.join(BUILTIN_GUARDS)}), named STS set "
                                        "or existing STS file or BEIR folder")
            if g in WIKI_GUARDS and d.path == "packaged:wiki":
                bad(f"eval.guard[{i}]", f"{g} is built from the packaged Wikipedia, which data.path packaged:wiki "
                                        "trains on: it guards nothing off the training domain")
        if (isinstance(e.guard_tolerance, bool) or not isinstance(e.guard_tolerance, (int, float))
                or not math.isfinite(e.guard_tolerance)):
            bad("eval.guard_tolerance", f"expected points (x100), e.g. 1.0, got {e.guard_tolerance!r}")
        positive("eval.guard_tolerance", e.guard_tolerance, allow_zero=True)
        if e.guard_select and not e.guard:
            bad("eval.guard_select", "is true but eval.guard lists no set")
        positive("eval.every", e.every, allow_zero=True)
        positive("eval.batch_size", e.batch_size)
        positive("train.batch_size", t.batch_size)
        sequence = d.kind == "interactions" and d.interactions is not None and d.interactions.user_tower == "sequence"
        if t.batch_size < 2 and lo.moco is None and not sequence:  # the sequence tower's softmax: every item
            bad("train.batch_size", "in-batch negatives need a batch of at least 2")
        positive("train.epochs", t.epochs)
        if t.max_steps is not None:
            positive("train.max_steps", t.max_steps)
        positive("train.grad_accum", t.grad_accum)
        choice("train.mixed_precision", t.mixed_precision, ("no", "fp16", "bf16", "auto"))
        if t.threads is not None:
            positive("train.threads", t.threads)
        wa = t.wise_alpha
        if isinstance(wa, str) and wa != "auto":  # YAML 1.1 reads 5e-1 as a string
            try:
                wa = t.wise_alpha = float(wa)
            except ValueError:
                pass
        if wa is not None and wa != "auto" and (isinstance(wa, bool) or not isinstance(wa, (int, float))
                                                or not 0.0 <= wa <= 1.0):  # NaN fails the range too
            bad("train.wise_alpha", f"expected a number in [0, 1], auto, or null, got {wa!r}")
        if wa is not None and m.two_tower:
            bad("train.wise_alpha", "merges one encoder with its start; model.two_tower trains two")
        if wa == "auto" and not (e.data or e.retrieval):
            bad("train.wise_alpha", "auto keeps the best score on the task's selection sets (eval.data, "
                                    "eval.retrieval) among the merges the guards allow, and the recipe has none")
        positive("train.checkpoint_every", t.checkpoint_every, allow_zero=True)
        positive("train.keep_checkpoints", t.keep_checkpoints)
        positive("train.log_every", t.log_every)
        return self


    def _check_interactions(self, bad, positive) -> None:
        """``data.kind: interactions``: the catalogue, the history and the options the next-item loss has."""
        d, lo, m, t = self.data, self.loss, self.model, self.train
        if d.interactions is None:
            d.interactions = InteractionsConfig()
        it = d.interactions
        if d.path.startswith("hf:"):
            bad("data.path", "an interaction log is a local file (RecBole .inter, CSV/TSV, JSONL) or packaged:ml100k")
        if it.items is None and d.path != "packaged:ml100k":
            bad("data.interactions.items", "expected the item catalogue file (item id and the template's fields)")
        if it.items is not None and not Path(str(it.items)).expanduser().is_file():
            bad("data.interactions.items", f"file {it.items!r} does not exist")
        if not isinstance(it.template, str) or "{" not in it.template:
            bad("data.interactions.template", f"expected a text with catalogue fields in braces, got {it.template!r}")
        if not isinstance(it.history, int) or isinstance(it.history, bool) or it.history < 1:
            bad("data.interactions.history", f"expected a positive number of items, got {it.history!r}")
        if not isinstance(it.cold_fraction, (int, float)) or not 0.0 <= it.cold_fraction < 1.0:
            bad("data.interactions.cold_fraction", f"expected a fraction in [0, 1), got {it.cold_fraction!r}")
        if it.negatives not in ("batch", "catalogue"):
            bad("data.interactions.negatives", f"expected batch or catalogue, got {it.negatives!r}")
        if it.negatives == "catalogue":
            positive("data.interactions.catalogue_refresh", it.catalogue_refresh)
            if m.mlp_head:
                bad("model.mlp_head", "the SimCSE head runs in training only, so the cached catalogue (embedded in "
                                      "eval mode) and the batch's items would be vectors of two spaces; use "
                                      "negatives batch or model.mlp_head false")
        else:
            self._unused(bad, "data.interactions.catalogue_refresh", "only negatives catalogue reads it")
        if not isinstance(it.cold_seed, int) or isinstance(it.cold_seed, bool) or it.cold_seed < 0:
            bad("data.interactions.cold_seed", f"expected a whole number >= 0, got {it.cold_seed!r}")
        if it.user_tower not in ("text", "sequence"):
            bad("data.interactions.user_tower", f"expected text or sequence, got {it.user_tower!r}")
        if it.user_tower == "sequence":
            self._check_sequence_tower(bad, positive)
        elif it.sequence is not None:
            bad("data.interactions.sequence", "is set but only user_tower sequence reads it; remove it, or set "
                                              "data.interactions.user_tower: sequence")
        if lo.name != "infonce":
            bad("loss.name", "data.kind interactions trains with the next-item softmax (loss.name infonce)")
        for name in ("cached", "symmetric", "nt_xent", "learnable_temperature", "gather_across_devices"):
            if getattr(lo, name):
                bad(f"loss.{name}", "is not an option of the next-item loss (data.kind interactions)")
        for name, value in (("loss.moco", lo.moco), ("loss.guide", lo.guide), ("loss.matryoshka", lo.matryoshka),
                            ("data.mix", d.mix), ("data.augment", d.augment), ("data.token_augment", d.token_augment)):
            if value is not None:
                bad(name, "does not combine with data.kind interactions")
        if m.two_tower:
            bad("model.two_tower", "data.kind interactions trains one tower for users and items")
        if t.wise_alpha is not None:
            bad("train.wise_alpha", "is not offered with data.kind interactions")

    def _check_sequence_tower(self, bad, positive) -> None:
        """``user_tower: sequence`` trains a small tower over frozen item vectors, in epochs: what the encoder's
        training reads and it does not is refused when set."""
        it = self.data.interactions
        if it.sequence is None:
            it.sequence = SequenceConfig()
        sq = it.sequence
        for name in ("dim", "hidden"):
            value = getattr(sq, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(f"data.interactions.sequence.{name}", f"expected a positive whole number, got {value!r}")
        if not isinstance(sq.dropout, (int, float)) or isinstance(sq.dropout, bool) or not 0.0 <= sq.dropout < 1.0:
            bad("data.interactions.sequence.dropout", f"expected a fraction in [0, 1), got {sq.dropout!r}")
        if not isinstance(sq.id_embeddings, bool):
            bad("data.interactions.sequence.id_embeddings", f"expected true or false, got {sq.id_embeddings!r}")
        why = ("user_tower sequence does not read it (it trains a GRU over frozen item vectors with a softmax over "
               "every item, for train.epochs)")
        for path in ("data.interactions.negatives", "data.interactions.catalogue_refresh",
                     "data.interactions.logq_correction", "data.interactions.mask_hits", "model.two_tower",
                     "model.mlp_head", "model.dropout", "optim.warmup_ratio", "optim.scheduler", "optim.ema_decay",
                     "optim.l2_start", "train.max_steps", "train.mixed_precision", "train.grad_accum",
                     "train.checkpoint_every", "eval.guard", "eval.retrieval", "eval.data", "eval.test", "eval.every",
                     "eval.select_best", "loss.similarity", "data.max_examples", "optim.betas", "optim.eps",
                     "optim.fused", "train.log_every", "model.save_max_seq_len", "model.fast_dropout",
                     "data.group_by_length", "data.interactions.separator", "eval.guard_tolerance"):
            self._unused(bad, path, why)
        if self.train.report_to not in ("auto", "none"):  # no trackers: the epochs are printed and in metrics.json
            bad("train.report_to", f"is set ({self.train.report_to!r}) but user_tower sequence reports to no "
                                   "tracker (its epochs are printed and kept in metrics.json); use none")
        positive("train.epochs", self.train.epochs)
        positive("train.batch_size", self.train.batch_size)
        positive("optim.lr", self.optim.lr)

    def _unused(self, bad, path: str, why: str) -> None:
        """Refuse the field at ``path`` (``section.name`` or ``data.interactions.name``) when it is set away from
        its default: this mode never reads it, and a silent no-op would hide that."""
        section, name = path.rsplit(".", 1)
        defaults = {"data": DataConfig(), "data.interactions": InteractionsConfig(), "loss": LossConfig(),
                    "model": ModelConfig(), "optim": OptimConfig(), "train": TrainSection(),
                    # an interaction log's runs select and report on its own ranking stages (_kind_defaults)
                    "eval": EvalConfig(data=[], test=[]) if self.data.kind == "interactions" else EvalConfig()}
        current = {"data": self.data, "data.interactions": self.data.interactions, "loss": self.loss,
                   "model": self.model, "optim": self.optim, "train": self.train, "eval": self.eval}
        now = getattr(current[section], name)
        if now != getattr(defaults[section], name):
            bad(path, f"is set ({now!r}) but {why}; remove it")

    def _refuse_unused(self, bad) -> None:
        """A field set away from its default that this mode never reads is an error, not a silent no-op."""
        d, lo = self.data, self.loss

        def unused(path: str, why: str) -> None:
            self._unused(bad, path, why)

        if lo.moco is not None:
            unused("loss.matryoshka", "MoCo's loss contrasts full embeddings against its queue (no Matryoshka "
                                      "prefixes)")
            unused("data.group_field", "MoCo's queue keeps no groups, so they would mask nothing")
        if d.kind != "triples":
            unused("loss.hard_negative_weight", f"weights hard negatives, and data.kind {d.kind!r} has none")
        if not lo.cached:
            unused("loss.mini_batch_size", "is GradCache's mini-batch (loss.cached: true)")
        if lo.nt_xent:
            unused("loss.symmetric", "NT-Xent is symmetric already")
        if lo.name == "infonce":
            unused("loss.scale", "is CoSENT's and AnglE's; InfoNCE's is 1 / loss.temperature")
        if lo.name != "angle":
            unused("loss.angle", "configures loss.name angle")
        if d.kind == "interactions":
            for name in ("group_field", "text_field", "anchor_field", "positive_field", "negative_field"):
                unused(f"data.{name}", "an interaction log's rows are users, items and times (data.interactions)")
            unused("loss.mask_false_negatives", "the next-item loss masks by item id: "
                                                "data.interactions.mask_hits")
        elif d.kind == "scored":
            why = f"loss.name {lo.name} reads only the pairs and their scores"
            for name in ("temperature", "similarity", "mask_false_negatives"):
                unused(f"loss.{name}", why)
            for name in ("group_field", "text_field", "anchor_field", "positive_field", "negative_field"):
                unused(f"data.{name}", "scored data is read in an STS layout (sentence1, sentence2, score)")
        else:
            if d.kind != "unlabeled":
                unused("data.text_field", f"is the text of data.kind unlabeled, not {d.kind!r}")
            if d.kind == "unlabeled" or d.path == "packaged:wiki":
                for name in ("anchor_field", "positive_field"):
                    unused(f"data.{name}", "unlabeled data has one text per example (data.text_field)")
            if d.kind != "triples":
                unused("data.negative_field", f"data.kind {d.kind!r} has no hard negatives")
            if d.path == "packaged:wiki":
                unused("data.group_field", "the packaged Wikipedia sentences carry no groups")
            if d.path.lower().endswith(".txt"):
                for name in ("group_field", "text_field"):
                    unused(f"data.{name}", "a .txt file holds one text per line and no fields")


# ---------------------------------------------------------------------------------------------- loading
def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, path: str, source: str | None) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path, source)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping of {_type_name(tp)} fields, got {type(value).__name__}", source)
        return _from_dict(tp, value, path, source)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # YAML 1.1 reads no/yes/off/on as booleans: `mixed_precision: no`
            return "yes" if value else "no"
    elif tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            args = typing.get_args(tp)  # list[float]: each element coerced as a float field is
            return [_coerce(v, args[0], f"{path}[{i}]", source) for i, v in enumerate(value)] if args else list(value)
        if isinstance(value, str):  # a single set name where a list is expected
            return [value]
    else:
        return value
    raise ConfigError(path, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}", source)


def _from_dict(cls, data: dict, prefix: str, source: str | None):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(path, f"unknown field; expected one of {', '.join(names)}", source)
        kwargs[key] = _coerce(value, hints[key], path, source)
    return cls(**kwargs)


def set_field(data: dict, key: str, value: Any, source: str | None = None) -> None:
    """Set the dotted field ``key`` of a recipe mapping to ``value``, creating sections on the way."""
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts), f"{part!r} is not a section", source)
        node = child
    node[parts[-1]] = value


def _apply_override(data: dict, assignment: str, source: str | None) -> None:
    if "=" not in assignment:
        raise ConfigError(assignment, "expected KEY=VALUE, e.g. train.batch_size=128", source)
    key, raw = assignment.split("=", 1)
    set_field(data, key, yaml.safe_load(raw) if raw.strip() else "", source)


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...] = (), source: str | None = None) -> dict:
    """A copy of the recipe mapping ``data`` with ``KEY=VALUE`` overrides applied (``VALUE`` parsed as YAML)."""
    data = copy.deepcopy(dict(data or {}))  # overrides must not write into the caller's nested dicts
    for assignment in overrides:
        _apply_override(data, assignment, source)
    return data


def config_from_dict(data: dict, overrides: list[str] | tuple[str, ...] = (), source: str | None = None) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a plain dict (as loaded from YAML)."""
    return _from_dict(TrainConfig, _kind_defaults(apply_overrides(data, overrides, source)), "",
                      source).validate(source)


def _kind_defaults(data: dict) -> dict:
    """Defaults that depend on ``data.kind``: a recommendation run (``interactions``) selects on its own ranking
    stage and reports its own test stages, so ``eval.data`` and ``eval.test`` default to no STS sets."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        return data
    if data["data"].get("kind") == "interactions" and (data.get("eval") is None or isinstance(data["eval"], dict)):
        section = dict(data.get("eval") or {})
        section.setdefault("data", [])
        section.setdefault("test", [])
        data = {**data, "eval": section}
    return data


def read_yaml(path: str | os.PathLike, what: str = "recipe") -> Any:
    """The YAML document in ``path`` (a recipe, a search space): a missing file raises ``FileNotFoundError``
    calling it ``what``; invalid YAML a :class:`ConfigError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError("", f"not valid YAML{line}: {getattr(exc, 'problem', exc)}", str(path)) from None


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load a recipe YAML file, apply ``KEY=VALUE`` overrides, and validate."""
    data = read_yaml(path, "recipe") or {}
    if not isinstance(data, dict):
        raise ConfigError("", "expected a mapping of sections (model, data, loss, optim, eval, train)", str(path))
    return config_from_dict(data, overrides, source=str(path))


def load_augment_config(path: str) -> Any:
    """The augmenter config in a YAML file: its ``augment:`` section if it has one, else the whole file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataFormatError(path, mark.line + 1 if mark else None, f"not valid YAML: {exc}") from None
    if isinstance(data, dict) and "augment" in data:
        data = data["augment"]
    return data
