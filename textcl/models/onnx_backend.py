"""ONNX Runtime inference for an Encoder's transformer: export once, then run the graph on CPU.

The export is the transformer alone, ``(input_ids, attention_mask[, token_type_ids]) -> last_hidden_state``
(batch and sequence dimensions dynamic), in sentence-transformers' layout: ``onnx/model.onnx`` with those
input and output names. So a folder that sentence-transformers (optimum) exported is used as it is, and
pooling, dense layers and normalisation stay in textcl's code, identical for both backends.

Where the export lives: ``<model folder>/onnx/model.onnx`` when the folder has one; otherwise in textcl's
cache, ``$TEXTCL_CACHE`` (default ``~/.cache/textcl``) ``/onnx/<key>/model.onnx``, keyed by the model
folder's path and its weight files' sizes and modification times, so a retrained model is exported again.
Exporting uses ``torch.onnx.export`` (the ``torch.export`` path, which needs ``onnxscript``) and checks the
graph against torch on a probe batch before the file is moved into place; a mismatch is an error, never a
silently different embedding.

Needs the ``textcl[onnx]`` extra: ``onnxruntime``, ``onnx`` and ``onnxscript``.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from textcl.errors import TextclError

ONNX_FILE = Path("onnx") / "model.onnx"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"
#: the largest difference between ONNX Runtime's and torch's hidden states (attended positions) accepted
EXPORT_TOLERANCE = 1e-3
PROBE_TEXTS = ("A short probe.", "A longer probe sentence, with punctuation and a few more words in it.")


BACKENDS = ("auto", "torch", "onnx")
#: torch: on this project's 2-core AVX2 machines ONNX Runtime (textcl's export, sentence-transformers' plain
#: and O3-optimised exports) encoded no faster than torch (benchmarks/RESULTS.md, "CPU inference backends");
#: ``auto`` measures both on the machine at hand (:mod:`textcl.models.backend_choice`)
DEFAULT_BACKEND = "torch"


def resolve_backend(choice: str | None) -> str:
    """The backend to use: ``choice``, else ``$TEXTCL_BACKEND``, else :data:`DEFAULT_BACKEND`."""
    from textcl.errors import ConfigError

    value = choice or os.environ.get("TEXTCL_BACKEND") or DEFAULT_BACKEND
    if value not in BACKENDS:
        raise ConfigError("TEXTCL_BACKEND" if not choice else "backend",
                          f"expected one of {', '.join(BACKENDS)}, got {value!r}")
    return value


class BackendUnavailable(TextclError, RuntimeError):
    """The ONNX backend cannot run here (a package is missing, or the device or pooling needs torch)."""


def available() -> bool:
    """True when onnxruntime is importable."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    missing = [name for name in ("onnxruntime", "onnx", "onnxscript") if not _importable(name)]
    if missing:
        raise BackendUnavailable(
            f"backend 'onnx' needs {', '.join(missing)}: pip install 'textcl[onnx]' (or use --backend torch)"
        )


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def cache_dir() -> Path:
    return Path(os.environ.get("TEXTCL_CACHE") or Path.home() / ".cache" / "textcl")


def export_key(folder: Path) -> str:
    """A key for ``folder``'s weights: its resolved path and each weight file's size and mtime (in the folder
    and one level down, where a sentence-transformers folder may keep its transformer, e.g. 0_Transformer/)."""
    folder = folder.resolve()
    parts = [str(folder)]
    for f in sorted([*folder.glob("*"), *folder.glob("*/*")]):
        if f.suffix in (".safetensors", ".bin") and f.is_file():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def export_path(folder: Path | None) -> Path | None:
    """The existing export for a model folder (its own ``onnx/model.onnx`` or textcl's cached one), else
    None. ``folder`` None (a model built in memory) has no export."""
    if folder is None:
        return None
    own = folder / ONNX_FILE
    if own.is_file():
        return own
    cached = cache_dir() / "onnx" / export_key(folder) / "model.onnx"
    return cached if cached.is_file() else None


class _LastHidden(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True,
                          **kwargs).last_hidden_state


def export(model: nn.Module, tokenizer, out: Path, max_length: int = 512) -> Path:
    """Export ``model`` (a Hugging Face encoder) to ``out`` and check it against torch; returns ``out``.

    Written to a temporary file beside ``out``, checked, then renamed, so ``out`` is complete or absent.
    """
    require()
    import onnxruntime as ort

    feats = dict(tokenizer(list(PROBE_TEXTS), padding=True, return_tensors="pt"))
    names = [k for k in INPUTS if k in feats]
    args = tuple(feats[k] for k in names)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    seq = torch.export.Dim("sequence", min=1, max=max_length)
    wrapper = _LastHidden(model).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".onnx", dir=out.parent)
    os.close(fd)
    try:
        with torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                wrapper, args, input_names=names, output_names=[OUTPUT], dynamo=True, optimize=True,
                dynamic_shapes={k: {0: batch, 1: seq} for k in names}, external_data=False, verbose=False,
            )
            program.save(tmp)
            expected = wrapper(*args).numpy()
        session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT], {k: v.numpy() for k, v in zip(names, args)})[0]
        mask = feats["attention_mask"].numpy()[..., None].astype(bool)
        diff = float(np.abs(np.where(mask, got - expected, 0)).max())
        if not diff <= EXPORT_TOLERANCE:
            raise BackendUnavailable(f"the ONNX export of {type(model).__name__} differs from torch by {diff:.2g} "
                               f"(> {EXPORT_TOLERANCE}); use the torch backend for this model")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


class OnnxTransformer:
    """``(features) -> last_hidden_state`` through an ONNX Runtime session on CPU.

    ``features``: ``input_ids``, ``attention_mask`` (B, L) int64 [+ ``token_type_ids``]; returns a float32
    tensor (B, L, hidden). Threads: ``torch.get_num_threads()`` at creation (``OMP_NUM_THREADS`` /
    ``--threads``), so both backends use the same cores.
    """

    def __init__(self, path: Path, threads: int | None = None):
        require()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        unknown = set(self.inputs) - set(INPUTS)
        if unknown:
            raise BackendUnavailable(f"{path}: unexpected ONNX inputs {sorted(unknown)}; expected {list(INPUTS)}")

    def __call__(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        feeds = {}
        for name in self.inputs:
            value = features.get(name)
            if value is None:  # token_type_ids for a single segment
                value = torch.zeros_like(features["input_ids"])
            feeds[name] = value.detach().cpu().numpy().astype(np.int64, copy=False)
        (hidden,) = self.session.run([OUTPUT], feeds)
        return torch.from_numpy(hidden)


def load_or_export(model: nn.Module, tokenizer, folder: Path | None, max_length: int = 512) -> OnnxTransformer:
    """The session for a model folder, exporting it into textcl's cache first when no export exists."""
    path = export_path(folder)
    if path is None:
        if folder is None:
            raise BackendUnavailable("backend 'onnx' needs a model loaded from a folder (save it first)")
        path = cache_dir() / "onnx" / export_key(folder) / "model.onnx"
        # standard error: standard output may be the command's result (index search --json prints JSON lines)
        print(f"textcl: exporting {folder} to ONNX once (cached at {path})", file=sys.stderr, flush=True)
        export(model, tokenizer, path, max_length)
    return OnnxTransformer(path)
