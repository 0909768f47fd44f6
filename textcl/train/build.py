"""Build a run from a recipe: the accelerator, the data, the encoders, the loss, the optimizer and its schedule."""
from __future__ import annotations

import copy
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from textcl.config import TrainConfig
from textcl.data.pairs import load_examples
from textcl.data.records import Example
from textcl.errors import ConfigError, TextclError
from textcl.models import Encoder
from textcl.models.chunking import row_lengths
from textcl.models.memory import MiniBatchChoice
from textcl.models.precision import PrecisionChoice, choose_precision
from textcl.thread_governor import ThreadGovernor, governor_for
from textcl.threads import apply_threads
from textcl.train.sampler import epoch_batches


@dataclass
class Run:
    """Everything a training loop touches, built once by :func:`build`.

    ``model`` and ``doc_model`` are the prepared (possibly DDP-wrapped) encoders; ``doc_model is model``
    unless ``model.two_tower``. ``key_encoder`` and ``queue`` are set for MoCo only. ``lengths`` (n,) is each
    example's length in characters (anchor + positive + negative), for length grouping."""

    config: TrainConfig
    out: Path
    acc: object
    precision: str
    trackers: list[str]
    examples: list[Example]
    lengths: np.ndarray
    model: torch.nn.Module
    doc_model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    text_aug: object | None
    token_aug: object | None
    key_encoder: torch.nn.Module | None
    queue: torch.nn.Module | None
    guide: Encoder | None  #: the frozen guide of ``loss.guide`` (GISTEmbed), in eval mode
    world: int
    steps_per_epoch: int
    total_steps: int
    max_seq_len: dict
    ema: object | None = None  #: the :class:`~textcl.train.ema.WeightAverage` of ``optim.ema_decay``
    precision_choice: PrecisionChoice | None = None  #: how ``train.mixed_precision`` resolved (measured for auto)
    #: how ``loss.mini_batch_size`` resolved (measured for auto); None unless ``loss.cached``
    mini_batch: MiniBatchChoice | None = None
    threads: ThreadGovernor | None = None  #: keeps torch's threads at the free cores (None: fixed by the user)
    anchor: object | None = None  #: the :class:`~textcl.train.anchor.StartAnchor` of ``optim.l2_start``
    mix: object | None = None  #: the :class:`~textcl.train.mix.MixTerm` of ``data.mix``
    #: ``train.wise_alpha``: the encoder's starting state dict on the CPU, taken before a resume loads weights
    start_state: dict | None = None
    #: ``data.kind: interactions``: the :class:`~textcl.recommend.task.InteractionTask` (items, split)
    task: object | None = None
    #: ``data.kind: interactions``: item -> log sampling probability among the rows trained on (the logQ correction)
    item_logq: dict | None = None
    #: ``data.interactions.negatives: catalogue``: the :class:`~textcl.recommend.catalogue.CatalogueCache`
    catalogue: object | None = None

    @property
    def encoder(self) -> Encoder:
        return self.acc.unwrap_model(self.model)

    @property
    def doc_encoder(self) -> Encoder:
        return self.acc.unwrap_model(self.doc_model)

    def process_batches(self, epoch: int) -> list[np.ndarray]:
        """This process's micro-batches of example indices for ``epoch``: global batches of
        ``batch_size x processes``, of which each process takes its slice, so N processes see the same
        global batches as one process with an N times larger batch."""
        c, r, size = self.config, self.acc.process_index, self.config.train.batch_size
        return [b[r * size:(r + 1) * size]
                for b in epoch_batches(self.lengths, size * self.world, seed=c.train.seed, epoch=epoch,
                                       group_by_length=c.data.group_by_length)]


def trackers(report_to) -> list[str]:
    """The experiment trackers to log to: ``auto`` finds tensorboard, and wandb when it is configured."""
    if report_to in (None, "none", []):
        return []
    if report_to != "auto":
        return [report_to] if isinstance(report_to, str) else list(report_to)
    found = []
    if importlib.util.find_spec("tensorboard") is not None:
        found.append("tensorboard")
    if importlib.util.find_spec("wandb") is not None and (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")):
        found.append("wandb")
    return found


def lr_lambda(total: int, warmup: int, kind: str):
    """The learning-rate multiplier at a step: linear warm-up, then constant or linear decay to 0."""
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def _model_shape(name: str) -> dict:
    """``{"hidden", "intermediate"}`` of a model folder's config, for the precision measurement (MiniLM's
    where the folder cannot be read yet; the encoder's own load reports that properly)."""
    from textcl._io import read_json
    from textcl.models.resolve import resolve_model

    try:
        config = read_json(resolve_model(name) / "config.json")
        hidden = int(config["hidden_size"])
        return {"hidden": hidden, "intermediate": int(config.get("intermediate_size") or 4 * hidden)}
    except (OSError, ValueError, KeyError, TypeError, TextclError):
        return {"hidden": 384, "intermediate": 1536}


def _resumed_layout(out: Path) -> dict:
    """The layout the newest checkpoint under ``out`` recorded (empty without one)."""
    from textcl._io import read_json
    from textcl.train.checkpoint import STATE_FILE, latest_checkpoint

    last = latest_checkpoint(out / "checkpoints")
    if last is None:
        return {}
    try:
        layout = read_json(last / STATE_FILE).get("layout", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return layout if isinstance(layout, dict) else {}


def _choose(c: TrainConfig, device_type: str, shape: dict, resumed: dict) -> PrecisionChoice:
    """``train.mixed_precision`` resolved: a resumed ``auto`` run keeps the precision its checkpoint's layout
    ``resumed`` records (a new measurement could differ, and the run would change precision half way)."""
    if c.train.mixed_precision == "auto":
        kept = resumed.get("precision")
        if kept in ("no", "fp16", "bf16"):
            return PrecisionChoice("auto", kept, device_type, None, cached=True)
    return choose_precision(c.train.mixed_precision, device_type, **shape)


def _accelerator(c: TrainConfig, out: Path, found_trackers: list[str], resumed: dict):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    from textcl.encode.dist import BARRIER_TIMEOUT

    # the other processes wait at a barrier while process 0 evaluates, saves and (train.wise_alpha: auto)
    # scores a grid of merges: torch's defaults (10 min for nccl, 30 for gloo) would kill a healthy run

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # Accelerate keeps one global state per process; a second run in the same process (a notebook,
        # a sweep) may ask for another mixed precision, so a single-process run starts afresh.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    # auto: measured on this machine (bf16 where it runs faster than fp32), cached; under several processes
    # process 0 measures and the others take its answer
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    shape = _model_shape(c.model.name) if c.train.mixed_precision == "auto" else {}
    if c.train.mixed_precision == "auto" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # every process must train in one precision: process 0 decides, the others take its choice
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        state = PartialState(cpu=not torch.cuda.is_available(), timeout=BARRIER_TIMEOUT)
        box: list = [None]
        if state.is_main_process:
            try:
                box[0] = _choose(c, device_type, shape, resumed)
            except Exception as exc:  # the others must not wait for an answer that never comes
                box[0] = TextclError(f"train.mixed_precision auto: process 0 could not measure: {exc}")
        choice = broadcast_object_list(box, from_process=0)[0]
        if isinstance(choice, Exception):
            raise choice
    else:
        choice = _choose(c, device_type, shape, resumed)
    acc = Accelerator(
        mixed_precision=choice.resolved, cpu=not torch.cuda.is_available(),
        log_with=found_trackers or None, project_dir=str(out),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True),
                         InitProcessGroupKwargs(timeout=BARRIER_TIMEOUT)],
    )
    if choice.bf16_over_fp32 is not None:
        acc.print(f"textcl: {choice.line()}")
    elif c.train.mixed_precision == "auto":
        acc.print(f"textcl: precision auto -> {choice.resolved}, as the checkpoint it resumes trained")
    return acc, choice


def _augmenters(c: TrainConfig, encoder: Encoder):
    from textcl.augment import build_augmenter

    text_aug = build_augmenter(c.data.augment, field="data.augment") if c.data.augment is not None else None
    token_aug = None
    if c.data.token_augment is not None:
        token_aug = build_augmenter(c.data.token_augment, field="data.token_augment").with_tokenizer(encoder.tokenizer)
    return text_aug, token_aug


def _optimizer(c: TrainConfig, modules: list[torch.nn.Module]) -> torch.optim.Optimizer:
    """AdamW; biases and LayerNorm weights get no weight decay."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    o = c.optim
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # the fused kernel runs on CUDA, and on the CPU from torch 2.4
    cpu_ok = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 4)
    fused = o.fused and all(p.device.type == "cuda" or (p.device.type == "cpu" and cpu_ok)
                            for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, **({"fused": True} if fused else {}))


def make_loss(c: TrainConfig, dim: int, device) -> torch.nn.Module:
    """The recipe's loss: InfoNCE, CoSENT or AnglE, wrapped by Matryoshka when ``loss.matryoshka`` is set."""
    from textcl.losses import AnglE, CoSENT, InfoNCE, Matryoshka

    lc = c.loss
    if c.data.kind == "interactions":
        from textcl.losses.next_item import NextItemLoss

        it = c.data.interactions
        loss_fn = NextItemLoss(lc.temperature, lc.similarity, logq_correction=it.logq_correction,
                               mask_hits=it.mask_hits, negatives=it.negatives)
    elif lc.name == "cosent":
        loss_fn = CoSENT(lc.scale)
    elif lc.name == "angle":
        a = lc.angle
        loss_fn = AnglE(lc.scale, cosine_weight=a.cosine_weight, angle_weight=a.angle_weight, ibn_weight=a.ibn_weight,
                        ibn_scale=a.ibn_scale, ibn_min_score=a.ibn_min_score)
    else:
        loss_fn = InfoNCE(lc.temperature, lc.similarity, symmetric=lc.symmetric, nt_xent=lc.nt_xent,
                          hard_negative_weight=lc.hard_negative_weight, learnable_temperature=lc.learnable_temperature,
                          gather_across_devices=lc.gather_across_devices,
                          guide_margin=lc.guide.margin if lc.guide is not None else 0.0)
    if lc.matryoshka is not None:
        if max(lc.matryoshka.dims) > dim:
            raise TextclError(f"loss.matryoshka.dims: {max(lc.matryoshka.dims)} is larger than the model's "
                              f"embedding dimension {dim}")
        loss_fn = Matryoshka(loss_fn, lc.matryoshka.dims, lc.matryoshka.weights)
    return loss_fn.to(device)


def _guide(c: TrainConfig, encoder: Encoder, device) -> Encoder | None:
    """``loss.guide``'s frozen encoder: a copy of the starting model (``self``), or a model loaded by name."""
    if c.loss.guide is None:
        return None
    name = c.loss.guide.model
    guide = copy.deepcopy(encoder) if name == "self" else Encoder.load(name, device=device)
    guide.eval().requires_grad_(False)
    return guide


#: the longest texts by characters whose tokens are counted to find a view's longest row
LONGEST_CANDIDATES = 256
#: the loss over the whole batch, in float32 copies of its logits (logits, log-softmax, exp, gradient) and of
#: its embeddings (the mini-batches' parts, the concatenated matrix, its gradient)
LOSS_COPIES, EMBEDDING_COPIES = 4, 3


def _longest_row(texts: list[str], encoder: Encoder, max_len: int, augmented: bool) -> dict[str, torch.Tensor]:
    """The longest of ``texts`` tokenized at ``max_len``, as (1, L) features on the encoder's device; tokens are
    counted for the :data:`LONGEST_CANDIDATES` longest texts by characters. ``augmented``: a view can be longer
    than its text (synonyms, back-translation), so the row is ``max_len`` tokens: those texts joined (repeated
    where they are short), cut at ``max_len``."""
    chars = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    candidates = [texts[i] for i in np.argsort(-chars, kind="stable")[:LONGEST_CANDIDATES]]
    if augmented:
        joined = " ".join(candidates)
        candidates = [" ".join([joined] * -(-16 * max_len // max(1, len(joined))))]
    feats = encoder.tokenize(candidates, max_length=max_len)
    widths = row_lengths(feats["attention_mask"])
    i = int(widths.argmax())
    return {k: v[i:i + 1, :max(1, int(widths[i]))].to(encoder.device) for k, v in feats.items()}


def _widest_rows(c: TrainConfig, examples: list[Example], towers: list[Encoder], augmented: bool) -> list[tuple]:
    """``(encoder, row)`` for each tower: the longest row of the views it embeds (anchors: the first tower;
    positives and negatives: the last), each view's longest found by :func:`_longest_row`."""
    fields = ["anchor"] if c.data.kind == "unlabeled" else ["anchor", "positive"]
    if examples[0].negative is not None:
        fields.append("negative")
    widest: dict[int, tuple] = {}
    for name in fields:
        encoder = towers[0] if name == "anchor" else towers[-1]
        row = _longest_row([getattr(e, name) for e in examples], encoder, c.model.max_seq_len, augmented)
        if id(encoder) not in widest or row["input_ids"].shape[1] > widest[id(encoder)][1]["input_ids"].shape[1]:
            widest[id(encoder)] = (encoder, row)
    return list(widest.values())


def _training_reserve(c: TrainConfig, optimizer: torch.optim.Optimizer, dim: int, world: int) -> int:
    """Bytes a GradCache step allocates beyond one mini-batch's activations: the gradients and AdamW's two
    moments of the parameters that have none yet, and the loss over the whole batch (an estimate: its logits
    ``(B, B x processes gathered x other views)``, twice when symmetric, per Matryoshka dimension)."""
    params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
    grads = sum(p.numel() * p.element_size() for p in params if p.grad is None)
    moments = sum(2 * p.numel() * p.element_size() for p in params if p not in optimizer.state)
    lc, n = c.loss, c.train.batch_size
    views = 3 if c.data.kind == "triples" else 2
    gathered = world if lc.gather_across_devices else 1
    logits = n * n * gathered * (views - 1) * (4 if lc.nt_xent else 2 if lc.symmetric else 1)
    logits *= len(lc.matryoshka.dims) if lc.matryoshka is not None else 1
    return grads + moments + 4 * (LOSS_COPIES * logits + EMBEDDING_COPIES * views * n * gathered * dim)


def _held(device: torch.device, modules: list, ema) -> int:
    """Bytes the run's tensors hold on ``device`` now: CUDA's allocated memory; on the CPU the weights and
    buffers of ``modules`` and the weight average's copy."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    storages = {}
    tensors = [t for m in modules if m is not None for t in (*m.parameters(), *m.buffers())]
    for t in tensors + list(getattr(ema, "shadow", [])):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


def _smallest_across(world: int, device: torch.device, value: int, error: Exception | None) -> int:
    """The smallest ``value`` over the processes (0 stands for a process that failed with ``error``), so every
    process trains with one mini-batch; a failure anywhere stops every process, with its own message."""
    if world > 1:
        import torch.distributed as dist

        box = torch.tensor([0 if error is not None else value], dtype=torch.long, device=device)
        dist.all_reduce(box, op=dist.ReduceOp.MIN)
        value = int(box.item())
    if error is not None:
        raise error
    if value < 1:
        raise TextclError("loss.mini_batch_size auto: another process could not fit one row in its memory "
                          "(its own message says why)")
    return value


def _mini_batch(c: TrainConfig, acc, towers: list[Encoder], optimizer, examples: list[Example], augmented: bool,
                precision: str, resumed: dict, modules: list, ema) -> MiniBatchChoice | None:
    """``loss.mini_batch_size`` resolved (None without ``loss.cached``). ``auto`` measures a row's activation
    memory on each tower's longest row (:func:`textcl.models.memory.row_memory`) and fits the device's budget,
    less :func:`_training_reserve`; several processes take the smallest fit. A resumed ``auto`` run keeps its
    checkpoint's mini-batch (the dropout masks are drawn per mini-batch) where that still fits."""
    from textcl.models import memory

    lc, n = c.loss, c.train.batch_size
    if not lc.cached:
        return None
    if lc.mini_batch_size != "auto":
        return MiniBatchChoice(lc.mini_batch_size, lc.mini_batch_size, n)
    world, device = acc.num_processes, acc.device
    row = budget = error = None
    largest = 0
    try:
        rows = []
        for encoder, features in _widest_rows(c, examples, towers, augmented):
            was_training = encoder.training
            encoder.train()
            try:
                rows.append(memory.row_memory(encoder, features, params=list(encoder.parameters()),
                                              autocast={"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)))
            finally:
                encoder.train(was_training)
        row = max(rows, key=lambda r: r.bytes)
        # CPU processes of one machine plan on the same free memory; each GPU's is its process's own
        share = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
        budget = memory.memory_budget(device, reserve=_training_reserve(c, optimizer, towers[0].dim, world),
                                      held=_held(device, modules, ema), limit=memory.memory_limit(), share=share)
        largest = memory.largest_fit(row.bytes, budget.bytes, budget.line())
    except Exception as exc:  # the other processes must not wait in the agreement for an answer that never comes
        error = exc
    largest = _smallest_across(world, device, largest, error)
    kept = resumed.get("loss.mini_batch_size")
    if isinstance(kept, int) and not isinstance(kept, bool) and kept >= 1:
        if kept > largest:
            raise TextclError(
                f"loss.mini_batch_size auto: the checkpoint this run resumes trained with mini-batches of {kept} rows, "
                f"and {largest} fit here ({memory.format_bytes(row.bytes)} a row of {row.tokens} tokens, "
                f"{budget.line()}); set loss.mini_batch_size: {memory.balanced_mini_batch(n, largest)} to resume "
                "with smaller ones (the dropout masks then differ from an uninterrupted run's)")
        return MiniBatchChoice("auto", kept, n, row, budget, world, resumed=True)
    return MiniBatchChoice("auto", memory.balanced_mini_batch(n, largest), n, row, budget, world)


def build(config: TrainConfig, out: Path, *, resume: bool = False) -> Run:
    """Set up a run: seeds, data, encoders (with dropout, augmenters, a second tower), the InfoNCE loss,
    AdamW with its schedule, everything prepared by Accelerate, and MoCo's key encoder and queue."""
    from accelerate.utils import set_seed

    from textcl.losses import MoCoQueue, MomentumEncoder

    c = config
    found_trackers = trackers(c.train.report_to)
    resumed = _resumed_layout(out) if resume else {}  # what the checkpoint a resume continues recorded
    # every usable core, shared among this node's processes (textcl.threads), set before anything is measured
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    apply_threads("train", processes=processes, explicit=c.train.threads)
    # fewer threads beside other busy processes, unless train.threads or OMP_NUM_THREADS pins them
    governor = governor_for("train", processes=processes, explicit=c.train.threads)
    if governor is not None:
        governor.settle()
        governor.tune()
    acc, choice = _accelerator(c, out, found_trackers, resumed)
    precision = choice.resolved
    set_seed(c.train.seed)
    task = item_logq = None
    if c.data.kind == "interactions":  # a log of (user, item, time): history -> next item rows (textcl.recommend)
        from textcl.recommend.task import load_task, rows_logq

        task = load_task(c.data)
        if task.repeated_rows:
            acc.print(f"textcl: {c.data.path}: {task.repeated_rows:,} rows repeat an earlier row's user, item and "
                      "timestamp; each such interaction is counted once")
        examples = task.examples()
        if c.data.max_examples is not None and c.data.max_examples < len(examples):
            keep = np.sort(np.random.default_rng(c.train.seed).choice(len(examples), c.data.max_examples,
                                                                        replace=False))
            examples = [examples[i] for i in keep]
        item_logq = rows_logq(examples)
    else:
        examples = load_examples(c.data)
    # length grouping sorts by the whole row's cost: anchor + positive (+ negative), in characters
    lengths = np.fromiter((len(e.anchor) + len(e.positive) + len(e.negative or "") for e in examples),
                          dtype=np.int64, count=len(examples))
    # model.max_seq_len truncates training inputs only: evaluation and the saved model keep the model's
    # own maximum length, as SimCSE's evaluation does
    encoder = Encoder.load(c.model.name, pooling=c.model.pooling, mlp_head=c.model.mlp_head, device=acc.device)
    if c.model.save_max_seq_len is True:
        encoder.max_seq_length = min(encoder.max_seq_length, c.model.max_seq_len)
    max_seq_len = {"train": c.model.max_seq_len, "saved": encoder.max_seq_length}
    text_aug, token_aug = _augmenters(c, encoder)
    dropout = c.model.dropout
    if dropout is None and getattr(text_aug, "dropout", None) is not None:
        dropout = text_aug.dropout  # Identity(dropout=...) names the rate of the dropout views
    if dropout is not None:
        encoder.set_dropout(dropout)
    if c.model.fast_dropout:
        from textcl.models.dropout import install

        install(encoder.model)
    chunk = None
    if encoder.chunk_overhead == "auto" and isinstance(resumed.get("chunk_overhead"), int):
        encoder.chunk_overhead = resumed["chunk_overhead"]  # a resumed run cuts its chunks as before
    if encoder.chunk_overhead == "auto":  # the cost of one more chunk, measured for this model here (cached)
        from textcl.models.chunking import measured_chunk_overhead

        encoder.chunk_overhead, chunk = measured_chunk_overhead(encoder, bf16=precision == "bf16")
        where = "GPU" if acc.device.type == "cuda" else "CPU"
        acc.print(f"textcl: chunk cost {encoder.chunk_overhead} tokens, "
                  + (f"measured on this {where}{' (cached)' if chunk['cached'] else ''}" if chunk["steady"] else
                     f"the {where} default: the measurement was disturbed by other work"))
    doc_encoder = copy.deepcopy(encoder) if c.model.two_tower else None
    anchor = None
    if c.optim.l2_start:  # the starting weights, taken before a resumed run loads its checkpoint
        from textcl.train.anchor import StartAnchor

        anchor = StartAnchor([*encoder.parameters(), *(doc_encoder.parameters() if doc_encoder else [])],
                             c.optim.l2_start)
    start_state = None
    if c.train.wise_alpha is not None:  # the merge's base: the weights training starts from, kept on the CPU
        start_state = {k: v.detach().to("cpu", copy=True) for k, v in encoder.state_dict().items()}
    mix = None
    if c.data.mix is not None:
        from textcl.train.mix import MixTerm

        mix = MixTerm.load(c.data.mix, c.train.seed, encoder)  # distill's teacher: the weights training starts from
    guide = _guide(c, encoder, acc.device)
    lc = c.loss
    loss_fn = make_loss(c, encoder.dim, acc.device)

    world = acc.num_processes
    if lc.cached and c.model.two_tower and world > 1:
        raise TextclError("loss.cached with model.two_tower on several processes is not supported: the "
                          "replayed query tower would skip its gradient all-reduce; use one of the two")
    global_batches = len(epoch_batches(lengths, c.train.batch_size * world, seed=c.train.seed, epoch=0,
                                       group_by_length=False))
    steps_per_epoch = global_batches // c.train.grad_accum
    if steps_per_epoch == 0:
        raise ConfigError("train.batch_size", f"the data's {len(examples)} examples make no full optimizer step "
                                              f"of batch_size {c.train.batch_size} x grad_accum "
                                              f"{c.train.grad_accum} x {world} process(es)")
    total = steps_per_epoch * c.train.epochs
    total_steps = min(total, c.train.max_steps) if c.train.max_steps else total

    towers = [encoder] + ([doc_encoder] if doc_encoder is not None else [])
    optimizer = _optimizer(c, towers[:1] + [loss_fn] + towers[1:])
    warmup = int(round(c.optim.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, warmup, c.optim.scheduler))
    # the loss is prepared (DDP-wrapped) only when it has parameters (a learnt temperature)
    learnt = any(p.requires_grad for p in loss_fn.parameters())
    prepared = acc.prepare(*towers, *([loss_fn] if learnt else []), optimizer)
    model = prepared[0]
    acc.register_for_checkpointing(scheduler)
    key_encoder = queue = None
    if lc.moco is not None:
        unwrapped = acc.unwrap_model(model)
        key_encoder = MomentumEncoder(unwrapped, lc.moco.momentum).to(acc.device)
        queue = MoCoQueue(unwrapped.dim, lc.moco.queue_size).to(acc.device)
        acc.register_for_checkpointing(key_encoder)
        acc.register_for_checkpointing(queue)
    catalogue = None
    if task is not None and c.data.interactions.negatives == "catalogue":  # every training item, cold ones left out
        from textcl.recommend.catalogue import CatalogueCache

        kept = [(i, t) for i, t in zip(task.item_ids, task.item_texts) if i not in task.cold_items]
        catalogue = CatalogueCache([i for i, _ in kept], [t for _, t in kept], encoder.dim,
                                   c.data.interactions.catalogue_refresh).to(acc.device)
        acc.register_for_checkpointing(catalogue)
    ema = None
    if c.optim.ema_decay:
        from textcl.train.ema import WeightAverage

        ema = WeightAverage((p for g in prepared[-1].param_groups for p in g["params"]), c.optim.ema_decay)
        acc.register_for_checkpointing(ema)
    mini_batch = _mini_batch(c, acc, towers, optimizer, examples, text_aug is not None, precision, resumed,
                             [*towers, loss_fn, guide], ema)
    if mini_batch is not None and mini_batch.row is not None:
        acc.print(f"textcl: {mini_batch.line()}")
    if world > 1:
        # Everything above (weights, heads) is the same on every process; from here on the randomness is the
        # training's own (dropout), which must differ: with one seed every process drew the same dropout masks,
        # so row i of each rank's batch had the same noise. One process keeps the stream it always had.
        set_seed(c.train.seed, device_specific=True)  # seed + process index
    return Run(config=c, out=out, acc=acc, precision=precision, trackers=found_trackers, examples=examples,
               lengths=lengths, model=model, doc_model=prepared[1] if doc_encoder is not None else model,
               loss_fn=prepared[-2] if learnt else loss_fn, optimizer=prepared[-1], scheduler=scheduler,
               text_aug=text_aug, token_aug=token_aug, key_encoder=key_encoder, queue=queue, guide=guide, world=world,
               steps_per_epoch=steps_per_epoch, total_steps=total_steps, max_seq_len=max_seq_len, ema=ema,
               precision_choice=choice, mini_batch=mini_batch, threads=governor, anchor=anchor, mix=mix, start_state=start_state,
               task=task, item_logq=item_logq, catalogue=catalogue)
