"""Which merge of a fine-tuned model with its start keeps the most off the task for the least of the task: the
uniform WiSE-FT interpolation (``textcl merge``, ``train.wise_alpha``) against merges that differ by depth.

One trained run of the STS recipe without a remedy (``benchmarks/bench_keep.py --arms recipe``) and its
starting model; each scheme gives every tensor its own alpha, ``(1 - a) * start + a * tuned``:

- ``uniform-A``: every tensor at A (WiSE-FT);
- ``keep-embeddings``: the embeddings at the start, every layer tuned;
- ``keep-lower-K``: the embeddings and layers 0..K-1 at the start, the layers from K on tuned;
- ``ramp-A``: the embeddings at the start, layer i of L at A + (1 - A) * i / (L - 1) (A at the bottom, 1 at
  the top);
- ``soup-A-B`` (with ``--with SECOND``, a second run fine-tuned from the same start): every tensor at
  ``start + A * (tuned - start) + B * (second - start)``, a model soup of the two runs' task vectors.

Every merge is scored on STS-B dev and the run's two Wikipedia guards (what a chooser may read: the best dev
score among the merges whose guards stay within 1 point of the start), and on STS-B test, the held-out ``-b``
Wikipedia guards and STS-B dev's forum genre (the answers-forums source, which STS-B train lacks), which no
choice reads. Scores are x100 with 95% bootstrap CIs. Results are kept per model and scheme in
``benchmarks/.cache/merge/<models>/`` (a rerun scores only what is missing).

    python benchmarks/bench_merge.py                                  # the recipe arm's model, every scheme
    python benchmarks/bench_merge.py --schemes uniform-0.6 ramp-0.3   # some schemes
    python benchmarks/bench_merge.py --with benchmarks/.cache/keep/run-distill2-wise/best-model \
        --schemes start soup-0.5-0.5                                  # a soup of the two runs
    python benchmarks/bench_merge.py --report                         # (--tuned / --with name the table)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache" / "merge"
TUNED = ROOT / "benchmarks" / ".cache" / "keep" / "run-recipe" / "model"
BASE = "sentence-transformers/all-MiniLM-L6-v2"
GUARDS = ["wiki-description-lead", "wiki-sentence-rest"]
OFF_TASK = ["wiki-description-lead-b", "wiki-sentence-rest-b", *GUARDS, "stsb-dev-forums"]
TOLERANCE, TARGET_TEST = 1.0, 86.5
LAYERS = 6  #: all-MiniLM-L6-v2's
SCHEMES = ["start", *[f"uniform-{a}" for a in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)], "keep-embeddings",
           *[f"keep-lower-{k}" for k in (1, 2, 3, 4)], *[f"ramp-{a}" for a in (0.0, 0.3, 0.5)]]
_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")
_SOUP = re.compile(r"soup-([^-]+)-([^-]+)")
_WEIGHTS = ("*.safetensors", "*.bin")


def fingerprint(folder: Path) -> str:
    """The first 12 hex digits of a SHA-256 over every file of a model folder but its model card (their
    relative paths and bytes: weights, tokenizer, pooling, maximum length): a run retrained in place, or
    another run under the same name, gets another fingerprint."""
    h = hashlib.sha256()
    folder = Path(folder)
    if not any(f for pattern in _WEIGHTS for f in folder.rglob(pattern)):
        raise SystemExit(f"{folder}: no weight file (*.safetensors or *.bin); expected a model folder")
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.relative_to(folder) != Path("README.md"))
    for f in files:
        h.update(str(f.relative_to(folder)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:12]


def cache_dir(tuned: Path, second: Path | None = None) -> Path:
    """Where the scores of merges of ``tuned`` (and ``second``) are kept: one folder per pair of models
    (named by the runs' folders and their :func:`fingerprint`), so a merge of one run is never reported as a
    merge of another, nor of an earlier training of the same folder. (The starting model, ``BASE``, and the
    scoring code are not in the key: delete the cache after changing either.)"""
    name = "-".join(tuned.resolve().parts[-2:]) + "@" + fingerprint(tuned)
    if second is not None:
        name += "+" + "-".join(second.resolve().parts[-2:]) + "@" + fingerprint(second)
    return CACHE / name


def _number(text: str, scheme: str, low: float, high: float) -> float:
    """``text`` as a weight in [low, high], written as Python writes the float (``0.5``, not ``.5`` or
    ``0.50``), so that one merge has one name and one cache file."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"scheme {scheme!r}: {text!r} is not a number") from None
    if str(value) != text:
        raise ValueError(f"scheme {scheme!r}: write {text!r} as {value}")
    if not low <= value <= high:
        raise ValueError(f"scheme {scheme!r}: {value} is outside [{low:g}, {high:g}]")
    return value


def soup_weights(scheme: str) -> tuple[float, float] | None:
    """``soup-A-B`` -> (A, B), each in [0, 1]; None for any other scheme."""
    m = _SOUP.fullmatch(scheme)
    return (_number(m.group(1), scheme, 0.0, 1.0), _number(m.group(2), scheme, 0.0, 1.0)) if m else None


def check_scheme(scheme: str, layers: int) -> None:
    """Refuse a scheme name that is unknown, out of range, or another name for a listed scheme."""
    if scheme in ("start", "keep-embeddings"):
        return
    soup = soup_weights(scheme)
    if soup is not None:
        if 0.0 in soup:
            raise ValueError(f"scheme {scheme!r}: a soup with a weight 0 is a uniform merge of one run")
        return
    kind, _, arg = scheme.rpartition("-")
    if kind in ("uniform", "ramp"):
        value = _number(arg, scheme, 0.0, 1.0)
        if kind == "uniform" and value == 0.0:
            raise ValueError(f"scheme {scheme!r} is start")
        if kind == "ramp" and value == 1.0:
            raise ValueError(f"scheme {scheme!r} is keep-embeddings")
    elif kind == "keep-lower":
        if not (arg.isascii() and arg.isdigit()) or str(int(arg)) != arg or not 1 <= int(arg) < layers:
            raise ValueError(f"scheme {scheme!r}: K must be a whole number from 1 to {layers - 1} "
                             "(keep-lower-0 is keep-embeddings; keeping every layer is start)")
    else:
        raise ValueError(f"unknown scheme {scheme!r}; expected start, uniform-A, keep-embeddings, keep-lower-K, "
                         "ramp-A or soup-A-B")


def alpha_of(scheme: str, key: str, layers: int) -> float:
    """The alpha ``scheme`` gives the tensor named ``key`` of a ``layers``-layer encoder (embeddings: -1,
    the pooler: the top layer)."""
    check_scheme(scheme, layers)
    m = _LAYER.search(key)
    depth = int(m.group(1)) if m else (-1 if "embeddings" in key else layers - 1)
    if scheme == "start":
        return 0.0
    kind, _, arg = scheme.rpartition("-")
    if kind == "uniform":
        return float(arg)
    if scheme == "keep-embeddings":
        return 0.0 if depth < 0 else 1.0
    if kind == "keep-lower":
        return 0.0 if depth < int(arg) else 1.0
    if kind == "ramp":
        low = float(arg)
        return 0.0 if depth < 0 else low + (1.0 - low) * depth / (layers - 1)
    raise ValueError(f"scheme {scheme!r} gives no alpha per tensor (a soup weighs two runs)")


def merged_state(base: dict, tuned: dict, scheme: str, layers: int, second: dict | None = None) -> dict:
    import torch

    soup = soup_weights(scheme)
    if soup is not None and second is None:
        raise SystemExit(f"scheme {scheme}: a soup needs a second fine-tuned model (--with)")
    out = {}
    for key, b in base.items():
        t = tuned[key]
        if not b.is_floating_point():
            out[key] = t.clone()
        elif soup is not None:
            w1, w2 = soup
            out[key] = (b.float() + w1 * (t.float() - b.float()) + w2 * (second[key].float() - b.float())).to(b.dtype)
        else:
            out[key] = torch.lerp(b.float(), t.float(), alpha_of(scheme, key, layers)).to(b.dtype)
    return out


def score(enc) -> dict:
    """name -> [score, ci low, ci high] on every chooser and held-out set."""
    from textcl.eval.guards import load_guard
    from textcl.eval.stats import N_BOOTSTRAP
    from textcl.eval.sts import evaluate_sts

    sts = evaluate_sts(enc, ["stsb-dev", "stsb-test"], n_bootstrap=N_BOOTSTRAP, batch_size=128)["sets"]
    side = {k: {"score": sts[k]["spearman"], "ci95": sts[k]["ci95"]} for k in ("stsb-dev", "stsb-test")}
    for name in OFF_TASK:
        side[name] = load_guard(name).evaluate(enc, n_bootstrap=N_BOOTSTRAP, batch_size=128)
    return {k: [round(m["score"], 2), *[round(x, 2) for x in m["ci95"]]] for k, m in side.items()}


def run(schemes: list[str], tuned_path: Path, second_path: Path | None = None) -> None:
    from textcl.models import Encoder
    from textcl.models.merge import check_compatible, check_tensors

    start = Encoder.load(BASE, device="cpu")
    base = start.state_dict()
    enc = Encoder.load(tuned_path, device="cpu")
    tuned = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    check_compatible(start, enc, ("the start", str(tuned_path)))
    check_tensors(base, tuned, ("the start", str(tuned_path)))
    second = None
    if second_path is not None:
        other = Encoder.load(second_path, device="cpu")
        second = {k: v.detach().clone() for k, v in other.state_dict().items()}
        check_compatible(start, other, ("the start", str(second_path)))
        check_tensors(base, second, ("the start", str(second_path)))
    layers = enc.model.config.num_hidden_layers
    out = cache_dir(tuned_path, second_path)
    out.mkdir(parents=True, exist_ok=True)
    for scheme in schemes:
        path = out / f"{scheme}.json"
        if path.exists():
            continue
        t0 = time.perf_counter()
        enc.load_state_dict(merged_state(base, tuned, scheme, layers, second))
        record = {"scheme": scheme, "tuned": str(tuned_path), "with": str(second_path) if second_path else None,
                  "scores": score(enc),
                  "seconds": round(time.perf_counter() - t0, 1)}
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(record, indent=1))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        print(scheme, json.dumps(record["scores"]), flush=True)


def report(folder: Path) -> str:
    rows = {p.stem: json.loads(p.read_text())["scores"] for p in folder.glob("*.json")}
    if "start" not in rows:
        return "the starting model has not been scored yet"
    start = rows["start"]

    def within(scheme: str, sets: list[str]) -> bool:
        return all(rows[scheme][g][0] >= start[g][0] - TOLERANCE for g in sets)

    names = ["stsb-dev", "stsb-test", *OFF_TASK]
    lines = ["| merge | " + " | ".join(names) + " | guards kept (chooser) | every off-task set within 1 | target met |",
             "|" + "---|" * (len(names) + 4)]
    order = [s for s in SCHEMES if s in rows] + sorted(set(rows) - set(SCHEMES))
    for s in order:
        r = rows[s]
        kept, every = within(s, GUARDS), within(s, OFF_TASK)
        cells = [f"{r[n][0]:.2f}" + ("" if s == "start" else f" ({r[n][0] - start[n][0]:+.2f})") for n in names]
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {'yes' if kept else 'no'} | {'yes' if every else 'no'} | "
                     + ("yes" if every and r["stsb-test"][0] >= TARGET_TEST else "no") + " |")
    chosen = max([s for s in order if within(s, GUARDS)], key=lambda s: rows[s]["stsb-dev"][0])
    lines.append(f"\nThe chooser's pick (best STS-B dev among the merges whose two guards stay within {TOLERANCE:g}): "
                 f"{chosen}: STS-B test {rows[chosen]['stsb-test'][0]:.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemes", nargs="+", default=SCHEMES)
    parser.add_argument("--tuned", type=Path, default=TUNED, help="the fine-tuned model folder")
    parser.add_argument("--with", dest="second", type=Path, default=None,
                        help="a second model fine-tuned from the same start, for the soup-A-B schemes")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    for scheme in args.schemes:
        try:
            check_scheme(scheme, LAYERS)
        except ValueError as e:
            parser.error(str(e))
        if soup_weights(scheme) is not None and args.second is None:
            parser.error(f"scheme {scheme}: a soup needs a second fine-tuned model (--with)")
    if not args.report:
        run(args.schemes, args.tuned, args.second)
    print(report(cache_dir(args.tuned, args.second)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
