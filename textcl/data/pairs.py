"""Training examples: unlabeled texts, (anchor, positive) pairs, or (anchor, positive, negative) triples.

Sources: a local ``.txt`` (one text per line, unlabeled only), ``.jsonl``, ``.csv`` or ``.tsv`` file;
``packaged:wiki`` (the packaged Wikipedia sentences); or ``hf:REPO[/FILE][:SPLIT]`` on the hub, e.g.
``hf:princeton-nlp/datasets-for-simcse/wiki1m_for_simcse.txt`` (the SimCSE corpus) or
``hf:princeton-nlp/datasets-for-simcse/nli_for_simcse.csv`` (columns ``sent0``, ``sent1``, ``hard_neg``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from textcl._io import csv_reader, iter_json_lines, read_lines
from textcl.errors import ConfigError, DataFormatError
from textcl.hub import hub_reachable


@dataclass(frozen=True)
class Example:
    anchor: str
    positive: str
    negative: Optional[str] = None


def _fields(kind: str, text_field: str, anchor: str, positive: str, negative: str) -> list[str]:
    return {"unlabeled": [text_field], "pairs": [anchor, positive], "triples": [anchor, positive, negative]}[kind]


def _to_example(kind: str, values: list[str]) -> Example:
    if kind == "unlabeled":
        return Example(values[0], values[0])
    return Example(values[0], values[1], values[2] if kind == "triples" else None)


def read_examples_file(path: str | Path, kind: str, fields: list[str]) -> list[Example]:
    """Read examples from a local file; errors name the file, the line and the missing field."""
    path = Path(path)
    suffix = path.suffix.lower()
    out: list[Example] = []
    if suffix == ".txt":
        if kind != "unlabeled":
            raise DataFormatError(path, None, f"a .txt file holds unlabeled texts; {kind} need .jsonl, .csv or .tsv "
                                              f"with fields {', '.join(fields)}")
        return [Example(ln, ln) for ln in read_lines(path) if ln.strip()]
    if suffix == ".jsonl":
        for lineno, row in iter_json_lines(path):
            if kind == "unlabeled" and isinstance(row, str):
                out.append(Example(row, row))
                continue
            if not isinstance(row, dict):
                raise DataFormatError(path, lineno, f"expected a JSON object with fields {', '.join(fields)}")
            missing = [f for f in fields if not isinstance(row.get(f), str)]
            if missing:
                raise DataFormatError(path, lineno, f"missing or non-string field(s) {', '.join(missing)}; "
                                                    f"expected {', '.join(fields)}")
            out.append(_to_example(kind, [row[f] for f in fields]))
        return out
    if suffix in (".csv", ".tsv"):
        reader = csv_reader(path, read_lines(path))
        header = next(reader, None)
        if header is None:
            raise DataFormatError(path, None, "the file is empty")
        missing = [f for f in fields if f not in header]
        if missing:
            raise DataFormatError(path, 1, f"header lacks column(s) {', '.join(missing)}; found {', '.join(header)}")
        cols = [header.index(f) for f in fields]
        for row in reader:
            if not row:
                continue
            if len(row) < len(header):
                raise DataFormatError(path, reader.line_num, f"expected {len(header)} fields, got {len(row)}")
            out.append(_to_example(kind, [row[c] for c in cols]))
        return out
    raise DataFormatError(path, None, f"unsupported extension {suffix!r}; expected .txt, .jsonl, .csv or .tsv")


def _load_hub(spec: str, kind: str, fields: list[str]) -> list[Example]:
    target, _, split = spec.partition(":")
    parts = target.split("/")
    repo, data_file = "/".join(parts[:2]), "/".join(parts[2:]) or None
    if not hub_reachable():
        raise ConfigError("data.path", f"hub dataset {target!r} needs the Hugging Face hub, which is unreachable; "
                                       "download the file and point data.path at it")
    from datasets import load_dataset

    ds = load_dataset(repo, data_files=data_file, split=split or "train")
    if kind == "unlabeled" and fields[0] not in ds.column_names and "text" in ds.column_names:
        fields = ["text"]
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        raise ConfigError("data.path", f"hub dataset {target!r} lacks column(s) {', '.join(missing)}; "
                                       f"it has {', '.join(ds.column_names)}")
    columns = [ds[f] for f in fields]
    return [_to_example(kind, list(vals)) for vals in zip(*columns) if all(isinstance(v, str) and v for v in vals)]


def load_examples(data_cfg) -> list[Example]:
    """Examples for a :class:`~textcl.config.DataConfig`, truncated to ``max_examples``."""
    kind = data_cfg.kind
    fields = _fields(kind, data_cfg.text_field, data_cfg.anchor_field, data_cfg.positive_field,
                     data_cfg.negative_field)
    if data_cfg.path == "packaged:wiki":
        if kind != "unlabeled":
            raise ConfigError("data.kind", "packaged:wiki holds unlabeled sentences; use kind: unlabeled")
        from textcl.data.wiki import wiki_sentences

        examples = [Example(s, s) for s in wiki_sentences()]
    elif data_cfg.path.startswith("hf:"):
        examples = _load_hub(data_cfg.path[3:], kind, fields)
    else:
        examples = read_examples_file(Path(data_cfg.path).expanduser(), kind, fields)
    if data_cfg.max_examples is not None:
        examples = examples[: data_cfg.max_examples]
    if len(examples) < 2:
        raise DataFormatError(data_cfg.path, None, f"found {len(examples)} example(s); training needs at least 2")
    return examples
