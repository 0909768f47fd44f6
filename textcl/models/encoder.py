"""The Encoder: a Hugging Face transformer + pooling (+ optional dense layers) that turns texts into vectors."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from textcl.models.backend_choice import BackendChoice
from textcl.models.chunking import forward_by_length
from textcl.models.dense import DenseLayer
from textcl.models.features import pad_features
from textcl.models.pooling import check_pooling, pool
from textcl.models.prompts import apply_prompt, prompts_of
from textcl.models.resolve import resolve_model
from textcl.models.st_format import TANH, default_model_card, read_folder, write_folder
from textcl.thread_governor import running, tune_current


def check_texts(texts: Sequence[object]) -> list[str]:
    """Return ``texts`` as a list, or raise ``TypeError`` naming the first entry that is not a string."""
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
    return out


def _longest_first(input_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(order, lengths) of tokenized rows: longest first, ties in input order."""
    lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(input_ids))
    return np.argsort(-lengths, kind="stable"), lengths


def _attention_kernels(device: torch.device):
    """On CUDA, scaled-dot-product attention without the cuDNN backend: cuDNN builds an execution plan for each
    new input shape, and a training run's batches keep bringing new widths. On an H200 (bf16, MiniLM, batches of
    128 title -> passage pairs) it made textcl's step 3.2x slower (507 against 1,602 pairs/s with the flash,
    memory-efficient and math kernels; benchmarks/RESULTS.md, "GPU"). Elsewhere: nothing to choose."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


class Encoder(nn.Module):
    """Texts -> sentence embeddings.

    Args:
        model: a Hugging Face ``PreTrainedModel`` (e.g. ``BertModel``) returning ``last_hidden_state``.
        tokenizer: its tokenizer (a fast tokenizer is best).
        pooling: ``cls``, ``cls_before_pooler``, ``mean``, ``max`` or ``first_last_avg``
            (see :mod:`textcl.models.pooling`).
        normalize: L2-normalise in :meth:`encode` by default.
        max_seq_length: inputs are truncated to this many tokens.
        dense: sentence-transformers ``Dense`` layers applied after pooling, in order.
        mlp_head: add the SimCSE projection head (``Linear(d, d) + Tanh``), used while training only
            unless ``mlp_at_inference``.
        name: the name the model was loaded by (recorded in saved models and index manifests).

    ``forward(features) -> (B, d)`` gives un-normalised embeddings with gradient, for training. It runs the
    rows as length-homogeneous chunks (:mod:`textcl.models.chunking`), so a batch that mixes short queries
    and long passages costs the tokens it holds, not ``B x L``; set ``chunk_overhead = None`` to run the
    padded batch as one forward. :meth:`encode` gives normalised float32 numpy arrays for evaluation and
    search.
    """

    #: the cost of one more chunk in :meth:`forward`, in tokens: "auto" (by device, see
    #: :data:`textcl.models.chunking.CHUNK_OVERHEAD_TOKENS`), a number, or None to run the batch unchunked
    chunk_overhead: int | str | None = "auto"
    #: what ``encode(bf16=None)`` does; the trainer sets it to the run's precision for its evaluations
    encode_bf16: bool = False
    #: what ``encode(dim=None)`` keeps: the first ``truncate_dim`` dimensions (None: all of them)
    truncate_dim: int | None = None

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        *,
        pooling: str = "mean",
        normalize: bool = True,
        max_seq_length: int | None = None,
        dense: Iterable[DenseLayer] = (),
        mlp_head: bool = False,
        mlp_at_inference: bool = False,
        do_lower_case: bool = False,
        name: str | None = None,
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = check_pooling(pooling)
        if pooling == "cls" and getattr(model, "pooler", None) is None:
            raise ValueError("pooling 'cls' needs a model with a pooler layer; use 'cls_before_pooler' instead")
        self.normalize = normalize
        limit = getattr(model.config, "max_position_embeddings", 512)
        if getattr(model.config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
            limit -= 2  # position ids start after the padding index
        self.max_seq_length = int(min(max_seq_length or 512, limit))
        self.dense = nn.ModuleList(dense)
        hidden = model.config.hidden_size
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh()) if mlp_head else None
        self.mlp_at_inference = mlp_at_inference
        self.do_lower_case = do_lower_case
        self.name = name or getattr(model.config, "_name_or_path", "") or "model"
        self._onnx = None  # an OnnxTransformer while the ONNX backend is on (see use_backend)
        self.backend_choice = BackendChoice("torch", "torch")  # what the last use_backend decided, and why
        self._folder: Path | None = None  # the folder it was loaded from (where an ONNX export may be)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """The embedding dimension d."""
        if len(self.dense):
            return self.dense[-1].linear.out_features
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def backend(self) -> str:
        """``"onnx"`` while :meth:`encode` runs the transformer in ONNX Runtime, else ``"torch"``."""
        return "onnx" if self._onnx is not None else "torch"

    def use_backend(self, backend: str, folder: str | os.PathLike | None = None, *, announce: bool = True) -> str:
        """Run :meth:`encode`'s transformer with ``backend``: ``torch``, ``onnx`` (ONNX Runtime on CPU; the
        model folder's ``onnx/model.onnx``, else an export cached by :mod:`textcl.models.onnx_backend`) or
        ``auto``: onnx only where it measured at least 5% faster than torch on this CPU for this model's shape
        (:func:`textcl.models.backend_choice.choose_backend`, measured once per machine and cached), and where
        ONNX Runtime can run the model (installed, the CPU, a pooling that reads only the last hidden state);
        torch otherwise. ``auto``'s decision is printed to standard error once per process (``announce=False``
        leaves that to the caller). Returns the backend in use; :attr:`backend_choice` says why. Training
        (``train()``) switches back to torch, since the export holds the weights it was made from; gradients and
        bf16 autocast always run in torch.
        """
        import textcl.models.onnx_backend as ob
        from textcl.models.backend_choice import announce as print_once, choose_backend

        if backend not in ("torch", "onnx", "auto"):
            raise ValueError(f"backend: expected torch, onnx or auto, got {backend!r}")
        self._onnx = None
        self.backend_choice = BackendChoice(backend, "torch")
        if backend == "torch":
            return "torch"
        why = self._onnx_refusal()
        if why and backend == "onnx":
            raise ob.BackendUnavailable(f"backend 'onnx': {why}")
        folder = Path(folder) if folder is not None else getattr(self, "_folder", None)
        if backend == "onnx":
            self._onnx = ob.load_or_export(self.model, self.tokenizer, folder, self.max_seq_length)
            self.backend_choice = BackendChoice("onnx", "onnx")
            return "onnx"
        session = []  # opened at most once: by the measurement, or after it to run onnx

        def open_session():
            if not session:
                session.append(ob.load_or_export(self.model, self.tokenizer, folder, self.max_seq_length))
            return session[0]

        choice = BackendChoice("auto", "torch", reason=why)
        if not why:
            try:
                choice = choose_backend(self.model, open_session, max_length=self.max_seq_length)
                if choice.resolved == "onnx":
                    self._onnx = open_session()
            except Exception as exc:  # a missing package, a failed or mismatching export, a failed measurement
                choice = BackendChoice("auto", "torch", reason=f"ONNX Runtime unavailable for this model ({exc})")
        self.backend_choice = choice
        if announce:
            print_once(choice)
        return choice.resolved

    def _onnx_refusal(self) -> str | None:
        """Why ONNX Runtime cannot run this encoder's transformer, or None."""
        import textcl.models.onnx_backend as ob

        if self.device.type != "cpu":
            return f"the encoder is on {self.device.type}; ONNX Runtime runs here on the CPU"
        if self.pooling in ("cls", "first_last_avg"):
            return f"pooling {self.pooling!r} reads more than the last hidden state"
        if not ob.available():
            return "onnxruntime is not installed (pip install 'textcl[onnx]')"
        return None

    def train(self, mode: bool = True) -> "Encoder":
        """Switch to training (``mode=True``), which also switches :meth:`encode` back to torch: an ONNX export
        holds the weights it was made from, not the ones being trained."""
        if mode and self._onnx is not None:
            self._onnx = None
        return super().train(mode)

    def set_dropout(self, rate: float) -> None:
        """Set every dropout layer of the transformer (hidden and attention) to ``rate``."""
        for module in self.model.modules():
            if isinstance(module, nn.Dropout):
                module.p = rate
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
            if isinstance(getattr(self.model.config, key, None), float):
                setattr(self.model.config, key, rate)

    # ------------------------------------------------------------------ tokenization
    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenize and pad a batch: returns ``input_ids``, ``attention_mask`` (B, L), and
        ``token_type_ids`` when the model uses them."""
        texts = check_texts(texts)
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        return dict(self.tokenizer(texts, padding=True, truncation=True,
                                   max_length=max_length or self.max_seq_length, return_tensors="pt"))

    # ------------------------------------------------------------------ forward
    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """features: ``input_ids``, ``attention_mask`` (B, L) [+ ``token_type_ids``], right-padded -> (B, d)
        embeddings, computed in length-homogeneous chunks (see the class docstring)."""
        if self.chunk_overhead is None:
            return self.embed(features)
        inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        return forward_by_length(self.embed, inputs, None if self.chunk_overhead == "auto" else self.chunk_overhead)

    def embed(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The computation behind ``forward``. :meth:`encode` calls it directly, so wrappers that a trainer
        puts around ``forward`` (Accelerate's mixed-precision autocast) never change evaluation."""
        inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        need_hidden = self.pooling == "first_last_avg"
        if self._onnx is not None and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu"):
            # ONNX Runtime gives the last hidden state only (use_backend refuses poolings that need more)
            last, hidden_states, pooler_output = self._onnx(inputs).to(inputs["input_ids"].device), None, None
        else:
            with _attention_kernels(inputs["input_ids"].device):
                out = self.model(**inputs, output_hidden_states=need_hidden, return_dict=True)
            last, pooler_output = out.last_hidden_state, getattr(out, "pooler_output", None)
            hidden_states = out.hidden_states if need_hidden else None
        emb = pool(self.pooling, last, inputs["attention_mask"], hidden_states=hidden_states,
                   pooler_output=pooler_output)
        for layer in self.dense:
            emb = layer(emb)
        if self.mlp is not None and (self.training or self.mlp_at_inference):
            emb = self.mlp(emb)
        return emb

    # ------------------------------------------------------------------ inference
    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 64,
        normalize: bool | None = None,
        show_progress: bool = False,
        bf16: bool | None = None,
        dim: int | None = None,
        prompt_name: str | None = None,
    ) -> np.ndarray:
        """Embed texts.

        Texts are tokenized once, sorted by token length and batched, so that each batch pads little.
        Runs in eval mode under ``torch.inference_mode``; ``bf16=True`` adds bf16 autocast (``None``: the
        encoder's ``encode_bf16``, False unless a trainer set it to its run's precision). ``dim=d`` keeps the
        first ``d`` dimensions, before normalising (a Matryoshka-trained model's smaller embedding; ``None``:
        the encoder's ``truncate_dim``, else all). ``prompt_name`` puts that prompt of the model's folder before
        each text (``None``: its ``default_prompt_name``, if any; :mod:`textcl.models.prompts`).

        Returns:
            float32 array (n, d) in the input order; (d,) for a single string; (0, d) for an empty list.
        """
        single = isinstance(texts, str)
        texts = check_texts([texts] if single else texts)
        texts = apply_prompt(self, texts, prompt_name)
        normalize = self.normalize if normalize is None else normalize
        dim = self.truncate_dim if dim is None else dim
        if dim is not None and not (isinstance(dim, int) and 1 <= dim <= self.dim):
            raise ValueError(f"dim: expected an integer from 1 to the embedding dimension {self.dim}, got {dim!r}")
        dim = dim or self.dim
        n = len(texts)
        out = np.empty((n, dim), dtype=np.float32)
        if n == 0:
            return out
        enc = self._tokenize_unpadded(texts)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        order, _ = _longest_first(enc["input_ids"])
        device = self.device
        bf16 = self.encode_bf16 if bf16 is None else bf16
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext())
        starts = range(0, n, batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encode", unit="batch")
        was_training = self.training
        self.eval()
        try:
            # the calling thread's ThreadGovernor (a command's, training's, a server batcher's): the cores other
            # processes leave free, shared with the encodes running beside this one
            with torch.inference_mode(), autocast, running():
                for start in starts:
                    tune_current()
                    idx = order[start : start + batch_size]
                    batch = pad_features([{k: enc[k][i] for k in keys} for i in idx], self.tokenizer.pad_token_id or 0)
                    emb = self.embed({k: v.to(device) for k, v in batch.items()}).float()[:, :dim]
                    if normalize:
                        emb = F.normalize(emb, p=2, dim=-1)
                    out[idx] = emb.cpu().numpy()
        finally:
            nn.Module.train(self, was_training)  # restoring the mode is not training: keep the backend
        return out[0] if single else out

    def encode_order(self, texts: Sequence[str], prompt_name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(order, lengths)``: the order in which :meth:`encode` runs ``texts`` with ``prompt_name`` (by the
        prompted text's token length, longest first, ties in input order) and each prompted text's token
        count (truncated to ``max_seq_length``), both (n,) int64.

        ``encode([texts[i] for i in order[a:b]], batch_size=B, prompt_name=p)`` with ``a`` a multiple of ``B``
        runs the very batches that ``encode(texts, batch_size=B, prompt_name=p)`` runs for those rows, so it
        gives the same vectors bit for bit (sharded encoding, :mod:`textcl.encode`, relies on this).
        """
        texts = apply_prompt(self, check_texts(texts), prompt_name)
        if not texts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return _longest_first(self._tokenize_unpadded(texts)["input_ids"])

    def _tokenize_unpadded(self, texts: list[str]):
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        return self.tokenizer(texts, truncation=True, max_length=self.max_seq_length)

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, name_or_path: str | os.PathLike, *, pooling: str | None = None, normalize: bool | None = None,
             max_seq_length: int | None = None, device: str | torch.device | None = None,
             backend: str = "torch", **kwargs) -> "Encoder":
        """Load from a sentence-transformers folder, a Hugging Face folder, or a hub name.

        Keyword arguments override what the folder says (e.g. ``pooling="cls_before_pooler"``).
        ``backend``: what :meth:`encode` runs the transformer with (see :meth:`use_backend`).
        """
        path = resolve_model(name_or_path)
        parts = read_folder(Path(path))
        encoder = cls(
            parts.model, parts.tokenizer,
            pooling=pooling or parts.pooling or "mean",
            normalize=parts.normalize if normalize is None else normalize,
            max_seq_length=max_seq_length or parts.max_seq_length,
            do_lower_case=parts.do_lower_case,
            dense=parts.dense, name=os.fspath(name_or_path), **kwargs,
        )
        if device is None:  # ONNX Runtime runs on the CPU here: an onnx encoder stays there
            device = "cuda" if torch.cuda.is_available() and backend != "onnx" else "cpu"
        encoder = encoder.to(device)
        encoder._folder = Path(path)
        prompts_of(encoder)  # read now, before any thread encodes
        if backend != "torch":
            encoder.use_backend(backend)
        return encoder

    def save(self, path: str | os.PathLike, *, model_card: str | None = None,
             extra_json: dict[str, object] | None = None) -> Path:
        """Write the sentence-transformers layout atomically, with the model's prompts and default prompt;
        ``SentenceTransformer(path)`` loads it. ``extra_json``: more files (name -> JSON value) written inside
        the same atomic rename (a recommendation model's ``textcl_recommend.json``)."""
        dense = [(layer.linear, layer.activation_name) for layer in self.dense]
        if self.mlp is not None and self.mlp_at_inference:
            dense.append((self.mlp[0], TANH))
        card = model_card or default_model_card(self.name, self.dim, self.pooling, self.normalize)
        prompts, default_prompt = prompts_of(self)
        return write_folder(Path(path), model=self.model, tokenizer=self.tokenizer, pooling=self.pooling,
                            normalize=self.normalize, max_seq_length=self.max_seq_length,
                            do_lower_case=self.do_lower_case, dense=dense, model_card=card, prompts=prompts,
                            default_prompt_name=default_prompt, extra_json=extra_json)
