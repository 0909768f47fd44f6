"""Read and write the sentence-transformers folder layout.

This module reads a folder into :class:`ModelParts` and writes parts into a folder; it knows nothing of
:class:`~textcl.models.Encoder`, which composes the parts. A folder textcl writes holds the Hugging Face
model and tokenizer at its root, plus ``modules.json`` listing
``Transformer -> [WeightedLayerPooling] -> Pooling -> [Dense ...] -> [Normalize]``, so that
``SentenceTransformer(path)``, MTEB and FAISS pipelines use it as it is.
"""
from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import torch

from textcl._io import atomic_dir, read_json
from textcl.errors import DataFormatError, ModelNotFoundError
from textcl.models.dense import DenseLayer

TANH = "torch.nn.modules.activation.Tanh"
_ST = "sentence_transformers.models."


@dataclass
class ModelParts:
    """What a model folder holds: the transformer and tokenizer, and the sentence-transformers modules after
    it. ``pooling`` is None for a plain Hugging Face folder (the caller picks a default); ``max_seq_length``
    is None when the folder states no limit."""

    model: Any
    tokenizer: Any
    pooling: str | None = None
    normalize: bool = True
    max_seq_length: int | None = None
    do_lower_case: bool = False
    dense: list[DenseLayer] = field(default_factory=list)


def _read_json(path: Path) -> dict:
    try:
        return read_json(path)
    except FileNotFoundError:
        raise ModelNotFoundError(f"{path}: missing; the sentence-transformers folder is incomplete") from None
    except DataFormatError as exc:
        raise ModelNotFoundError(str(exc)) from None


def _module_kind(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def _tokenizer_limit(tokenizer) -> int | None:
    """The tokenizer's ``model_max_length`` when it is a real limit (transformers uses ~1e30 for "none")."""
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def _load_state(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").exists():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ModelNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin")


def _load_hf(folder: Path):
    from transformers import AutoModel, AutoTokenizer

    if not (folder / "config.json").exists():
        if (folder / "recommender.json").is_file():  # what a user_tower: sequence run writes as OUT/model
            raise ModelNotFoundError(f"{folder}: a sequence recommender (recommender.json), not a text encoder; "
                                     "index its catalogue with textcl index build --model FOLDER and serve that "
                                     "index (textcl.recommend.sequence.load reads it in Python)")
        raise ModelNotFoundError(f"{folder}: no config.json; expected a Hugging Face or sentence-transformers model folder")
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a weights bar per load is noise in a CLI table
    try:
        # float32 parameters whatever the checkpoint's dtype: transformers' "auto" would keep an fp16 or bf16
        # checkpoint in that dtype, and textcl trains (AdamW) and encodes fp32 weights, under autocast if asked
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model, tokenizer


def read_folder(folder: Path) -> ModelParts:
    """The parts of a local sentence-transformers or Hugging Face folder."""
    modules_file = folder / "modules.json"
    if not modules_file.exists():  # a plain Hugging Face folder: the caller's pooling, normalised
        model, tokenizer = _load_hf(folder)
        return ModelParts(model, tokenizer)

    modules = _read_json(modules_file)
    found_pooling, found_normalize, dense, layer_weights = None, False, [], None
    model = tokenizer = None
    st_config: dict = {}
    for entry in modules:
        kind = _module_kind(entry.get("type", ""))
        sub = folder / entry.get("path", "")
        if kind == "Transformer":
            model, tokenizer = _load_hf(sub)
            for cfg_name in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
                if (sub / cfg_name).exists():
                    st_config = _read_json(sub / cfg_name)
        elif kind == "WeightedLayerPooling":
            cfg = _read_json(sub / "config.json")
            weights = _load_state(sub)["layer_weights"].tolist()
            expected = [1.0] + [0.0] * (len(weights) - 2) + [1.0]
            if cfg.get("layer_start") != 1 or weights != expected:
                raise ModelNotFoundError(f"{sub}: only the first-last average (layer_start 1, weights [1, 0, ..., 1]) "
                                         "is supported")
            layer_weights = weights
        elif kind == "Pooling":
            cfg = _read_json(sub / "config.json")
            modes = [m for m in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens",
                                 "lasttoken") if cfg.get(f"pooling_mode_{m}")]
            if isinstance(cfg.get("pooling_mode"), str):  # sentence-transformers 6: "pooling_mode": "mean"
                modes = [{"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens"}.get(cfg["pooling_mode"],
                                                                                             cfg["pooling_mode"])]
            mapping = {"cls_token": "cls_before_pooler", "mean_tokens": "mean", "max_tokens": "max"}
            if len(modes) != 1 or modes[0] not in mapping:
                raise ModelNotFoundError(f"{sub / 'config.json'}: pooling modes {modes} are not supported; textcl reads "
                                         "exactly one of cls_token, mean_tokens, max_tokens")
            found_pooling = mapping[modes[0]]
            if layer_weights is not None:
                if found_pooling != "mean":
                    raise ModelNotFoundError(f"{sub}: WeightedLayerPooling is supported with mean pooling only")
                found_pooling = "first_last_avg"
        elif kind == "Dense":
            cfg = _read_json(sub / "config.json")
            layer = DenseLayer(cfg["in_features"], cfg["out_features"], cfg.get("bias", True),
                               cfg.get("activation_function", TANH))
            state = _load_state(sub)
            layer.linear.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("linear.")})
            dense.append(layer)
        elif kind == "Normalize":
            found_normalize = True
        else:
            raise ModelNotFoundError(f"{modules_file}: module type {entry.get('type')!r} is not supported; textcl reads "
                                     "Transformer, WeightedLayerPooling, Pooling, Dense and Normalize")
    if model is None:
        raise ModelNotFoundError(f"{modules_file}: no Transformer module")
    return ModelParts(
        model, tokenizer, pooling=found_pooling, normalize=found_normalize,
        # sentence-transformers 6 keeps the limit in the tokenizer's model_max_length instead
        max_seq_length=st_config.get("max_seq_length") or _tokenizer_limit(tokenizer),
        do_lower_case=bool(st_config.get("do_lower_case", False)), dense=dense,
    )


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("sentence-transformers", "transformers", "torch", "textcl"):
        try:
            out[dist.replace("-", "_") if dist != "torch" else "pytorch"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _save_dense(folder: Path, linear: torch.nn.Linear, activation: str) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "config.json", {"in_features": linear.in_features, "out_features": linear.out_features,
                                         "bias": linear.bias is not None, "activation_function": activation})
    state = {"linear.weight": linear.weight.detach().cpu().contiguous()}
    if linear.bias is not None:
        state["linear.bias"] = linear.bias.detach().cpu().contiguous()
    save_file(state, str(folder / "model.safetensors"))


def default_model_card(name: str, dim: int, pooling: str, normalize: bool) -> str:
    return (
        f"---\nlibrary_name: sentence-transformers\ntags:\n- sentence-transformers\n- textcl\n---\n\n"
        f"# {name}\n\nA sentence embedding model saved by textcl ({dim}-d, {pooling} pooling"
        f"{', normalised' if normalize else ''}).\n\n```python\nfrom sentence_transformers import "
        f"SentenceTransformer\nmodel = SentenceTransformer(\"path/to/this/folder\")\n"
        f"embeddings = model.encode([\"A sentence.\"])\n```\n"
    )


def write_folder(path: Path, *, model, tokenizer, pooling: str, normalize: bool, max_seq_length: int,
                 do_lower_case: bool, dense: list[tuple[torch.nn.Linear, str]], model_card: str,
                 prompts: dict[str, str] | None = None, default_prompt_name: str | None = None,
                 extra_json: dict[str, object] | None = None) -> Path:
    """Write the parts to ``path`` in the sentence-transformers layout, atomically (temp folder, then rename).
    ``prompts`` (name -> text) and ``default_prompt_name`` go to ``config_sentence_transformers.json``;
    ``extra_json`` (file name -> JSON value) are written beside them, inside the same rename.

    ``dense``: (linear layer, activation class path) for each layer after pooling, in order; with ``cls``
    pooling the model's pooler (dense + tanh) is written first, as a Dense module."""
    from safetensors.torch import save_file

    with atomic_dir(path) as tmp:
        if pooling == "first_last_avg":
            model.config.output_hidden_states = True
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        _write_json(tmp / "sentence_bert_config.json",
                    {"max_seq_length": max_seq_length, "do_lower_case": do_lower_case})
        modules = [{"path": "", "type": _ST + "Transformer"}]
        hidden = int(model.config.hidden_size)
        if pooling == "first_last_avg":
            n_layers = int(model.config.num_hidden_layers)
            sub = tmp / "1_WeightedLayerPooling"
            sub.mkdir()
            _write_json(sub / "config.json", {"embedding_dimension": hidden, "layer_start": 1,
                                               "num_hidden_layers": n_layers})
            weights = torch.zeros(n_layers)
            weights[0] = weights[-1] = 1.0
            save_file({"layer_weights": weights}, str(sub / "model.safetensors"))
            modules.append({"path": sub.name, "type": _ST + "WeightedLayerPooling"})
        sub = tmp / f"{len(modules)}_Pooling"
        _write_json(sub / "config.json", {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": pooling in ("cls", "cls_before_pooler"),
            "pooling_mode_mean_tokens": pooling in ("mean", "first_last_avg"),
            "pooling_mode_max_tokens": pooling == "max",
            "pooling_mode_mean_sqrt_len_tokens": False,
        })
        modules.append({"path": sub.name, "type": _ST + "Pooling"})
        layers = ([(model.pooler.dense, TANH)] if pooling == "cls" else []) + list(dense)
        for linear, activation in layers:
            sub = tmp / f"{len(modules)}_Dense"
            _save_dense(sub, linear, activation)
            modules.append({"path": sub.name, "type": _ST + "Dense"})
        if normalize:
            sub = tmp / f"{len(modules)}_Normalize"
            sub.mkdir()
            modules.append({"path": sub.name, "type": _ST + "Normalize"})
        _write_json(tmp / "modules.json", [{"idx": i, "name": str(i), **m} for i, m in enumerate(modules)])
        for name, value in (extra_json or {}).items():
            _write_json(tmp / name, value)
        _write_json(tmp / "config_sentence_transformers.json", {
            "__version__": _versions(), "prompts": dict(prompts or {}),
            "default_prompt_name": default_prompt_name if default_prompt_name in (prompts or {}) else None,
            "similarity_fn_name": "cosine",
        })
        (tmp / "README.md").write_text(model_card, encoding="utf-8")
    return path
