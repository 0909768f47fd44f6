"""Training examples: unlabeled texts, (anchor, positive) pairs, or (anchor, positive, negative) triples.

Sources: a local ``.txt`` (one text per line, unlabeled only), ``.jsonl``, ``.csv`` or ``.tsv`` file;
``packaged:wiki`` (the packaged Wikipedia sentences); or ``hf:REPO[/FILE][:SPLIT]`` on the hub, e.g.
``hf:princeton-nlp/datasets-for-simcse/wiki1m_for_simcse.txt`` (the SimCSE corpus) or
``hf:princeton-nlp/datasets-for-simcse/nli_for_simcse.csv`` (columns ``sent0``, ``sent1``, ``hard_neg``).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from textcl.data.readers import csv_reader, iter_json_lines, iter_jsonl, read_lines
from textcl.data.records import Example
from textcl.errors import ConfigError, DataFormatError
from textcl.hub import hub_reachable


def _fields(kind: str, text_field: str, anchor: str, positive: str, negative: str) -> list[str]:
    return {"unlabeled": [text_field], "pairs": [anchor, positive], "triples": [anchor, positive, negative],
            "scored": ["sentence1", "sentence2", "score"]}[kind]


def _group(value) -> str | None:
    """A group cell as a group name; null and blank cells (an empty CSV cell) are in no group, the same in
    every reader, so rows without a group are never masked against each other as one big group ``""``."""
    if value is None or (isinstance(value, float) and value != value):  # None, NaN (a hub table's empty cell)
        return None
    text = str(value)
    return text if text.strip() else None


def _to_example(kind: str, values: list[str], group=None) -> Example:
    group = _group(group)
    if kind == "unlabeled":
        return Example(values[0], values[0], group=group)
    return Example(values[0], values[1], values[2] if kind == "triples" else None, group)


def read_examples_file(path: str | Path, kind: str, fields: list[str], group_field: str | None = None) -> list[Example]:
    """Read examples from a local file; errors name the file, the line and the missing field.

    ``group_field`` names a column/field (string or number) whose equal values mark one group; a null or blank
    value marks a row in no group."""
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
            if kind == "unlabeled" and isinstance(row, str) and group_field is None:
                out.append(Example(row, row))
                continue
            if not isinstance(row, dict):
                raise DataFormatError(path, lineno, f"expected a JSON object with fields {', '.join(fields)}")
            missing = [f for f in fields if not isinstance(row.get(f), str)]
            if group_field is not None and (group_field not in row or isinstance(row[group_field], bool)
                                            or not isinstance(row[group_field], (str, int, type(None)))):
                missing.append(group_field)  # a null group is no group; a missing field is an error
            if missing:
                raise DataFormatError(path, lineno, f"missing or non-string field(s) {', '.join(missing)}; "
                                                    f"expected {', '.join(fields + ([group_field] if group_field else []))}")
            out.append(_to_example(kind, [row[f] for f in fields], row[group_field] if group_field else None))
        return out
    if suffix in (".csv", ".tsv"):
        reader = csv_reader(path, read_lines(path))
        header = next(reader, None)
        if header is None:
            raise DataFormatError(path, None, "the file is empty")
        missing = [f for f in fields + ([group_field] if group_field else []) if f not in header]
        if missing:
            raise DataFormatError(path, 1, f"header lacks column(s) {', '.join(missing)}; found {', '.join(header)}")
        cols = [header.index(f) for f in fields]
        group_col = header.index(group_field) if group_field else None
        for row in reader:
            if not row:
                continue
            if len(row) < len(header):
                raise DataFormatError(path, reader.line_num, f"expected {len(header)} fields, got {len(row)}")
            out.append(_to_example(kind, [row[c] for c in cols], row[group_col] if group_col is not None else None))
        return out
    raise DataFormatError(path, None, f"unsupported extension {suffix!r}; expected .txt, .jsonl, .csv or .tsv")


def _load_hub(spec: str, kind: str, fields: list[str], group_field: str | None = None) -> list[Example]:
    target, _, split = spec.partition(":")
    parts = target.split("/")
    repo, data_file = "/".join(parts[:2]), "/".join(parts[2:]) or None
    if not hub_reachable():
        raise ConfigError("data.path", f"hub dataset {target!r} needs the Hugging Face hub, which is unreachable; "
                                       "download the file and point data.path at it")
    from datasets import load_dataset

    ds = load_dataset(repo, data_files=data_file, split=split or "train")
    return examples_from_dataset(ds, kind, fields, group_field, name=target)


def examples_from_dataset(ds, kind: str, fields: list[str], group_field: str | None = None, *,
                          name: str = "dataset") -> list[Example]:
    """Examples from a ``datasets.Dataset``; rows with an empty or non-string text are skipped.
    For unlabeled data a ``text`` column serves when ``fields[0]`` is absent (plain-text hub files)."""
    if kind == "unlabeled" and fields[0] not in ds.column_names and "text" in ds.column_names:
        fields = ["text"]
    wanted = fields + ([group_field] if group_field else [])
    missing = [f for f in wanted if f not in ds.column_names]
    if missing:
        raise ConfigError("data.path", f"hub dataset {name!r} lacks column(s) {', '.join(missing)}; "
                                       f"it has {', '.join(ds.column_names)}")
    columns = [ds[f] for f in fields]
    groups = ds[group_field] if group_field else [None] * len(ds)
    return [_to_example(kind, list(vals), g) for vals, g in zip(zip(*columns), groups)
            if all(isinstance(v, str) and v for v in vals)]


def load_examples(data_cfg) -> list[Example]:
    """Examples for a :class:`~textcl.config.DataConfig`, truncated to ``max_examples``."""
    kind = data_cfg.kind
    fields = _fields(kind, data_cfg.text_field, data_cfg.anchor_field, data_cfg.positive_field,
                     data_cfg.negative_field)
    if kind == "scored":
        from textcl.data.sts import KNOWN_SETS, load_sts

        # CoSENT and AnglE use only the order of the scores: any finite scale is fine for training
        sts = (load_sts(data_cfg.path) if data_cfg.path in KNOWN_SETS
               else load_sts(Path(data_cfg.path).expanduser(), score_range=(-math.inf, math.inf)))
        examples = [Example(p.sentence1, p.sentence2, score=p.score) for p in sts.pairs()]
    elif data_cfg.path == "packaged:wiki":
        if kind != "unlabeled":
            raise ConfigError("data.kind", "packaged:wiki holds unlabeled sentences; use kind: unlabeled")
        from textcl.data.wiki import wiki_sentences

        examples = [Example(s, s) for s in wiki_sentences()]
    elif data_cfg.path.startswith("hf:"):
        examples = _load_hub(data_cfg.path[3:], kind, fields, data_cfg.group_field)
    else:
        examples = read_examples_file(Path(data_cfg.path).expanduser(), kind, fields, data_cfg.group_field)
    if data_cfg.max_examples is not None:
        examples = examples[: data_cfg.max_examples]
    if len(examples) < 2:
        raise DataFormatError(data_cfg.path, None, f"found {len(examples)} example(s); training needs at least 2")
    return examples


_PAIR_KEYS = (("anchor", "positive"), ("query", "positive"), ("sentence1", "sentence2"), ("text1", "text2"))


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(anchor, positive) from JSONL with keys anchor/positive (or query/positive, sentence1/sentence2)."""
    path = Path(path)
    pairs = []
    for lineno, obj in iter_jsonl(path):
        for a, p in _PAIR_KEYS:
            if isinstance(obj.get(a), str) and isinstance(obj.get(p), str):
                pairs.append((obj[a], obj[p]))
                break
        else:
            raise DataFormatError(path, lineno, "expected string fields 'anchor' and 'positive'")
    return pairs
