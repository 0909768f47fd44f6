"""Which merge of a fine-tuned model with its start keeps the most off the task for the least of the task: the
uniform WiSE-FT interpolation (``textcl merge``, ``train.wise_alpha``) against merges that differ by depth.

One trained run of the STS recipe without a remedy (``benchmarks/bench_keep.py --arms recipe``) and its
starting model; each scheme gives every tensor its own alpha, ``(1 - a) * start + a * tuned``:

- ``uniform-A``: every tensor at A (WiSE-FT);
- ``keep-embeddings``: the embeddings at the start, every layer tuned;
- ``keep-lower-K``: the embeddings and layers 0..K-1 at the start, the layers from K on tuned;
- ``ramp-A``: the embeddings at the start, layer i of L at A + (1 - A) * i / (L - 1) (A at the bottom, 1 at
  the top).

Every merge is scored on STS-B dev and the run's two Wikipedia guards (what a chooser may read: the best dev
score among the merges whose guards stay within 1 point of the start), and on STS-B test, the held-out ``-b``
Wikipedia guards and STS-B dev's forum genre (the answers-forums source, which STS-B train lacks), which no
choice reads. Scores are x100 with 95% bootstrap CIs. Results are kept per scheme in
``benchmarks/.cache/merge/`` (a rerun scores only what is missing).

    python benchmarks/bench_merge.py                                  # the recipe arm's model, every scheme
    python benchmarks/bench_merge.py --schemes uniform-0.6 ramp-0.3   # some schemes
    python benchmarks/bench_merge.py --report
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
CACHE = ROOT / "benchmarks" / ".cache" / "merge"
TUNED = ROOT / "benchmarks" / ".cache" / "keep" / "run-recipe" / "model"
BASE = "sentence-transformers/all-MiniLM-L6-v2"
CHOOSER = ["stsb-dev", "wiki-description-lead", "wiki-sentence-rest"]
HELD_OUT = ["stsb-test", "wiki-description-lead-b", "wiki-sentence-rest-b", "stsb-dev-forums"]
GUARDS = ["wiki-description-lead", "wiki-sentence-rest"]
OFF_TASK = ["wiki-description-lead-b", "wiki-sentence-rest-b", *GUARDS, "stsb-dev-forums"]
TOLERANCE, TARGET_TEST = 1.0, 86.5
SCHEMES = ["start", *[f"uniform-{a}" for a in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)], "keep-embeddings",
           *[f"keep-lower-{k}" for k in (1, 2, 3, 4)], *[f"ramp-{a}" for a in (0.0, 0.3, 0.5)]]
_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")


def alpha_of(scheme: str, key: str, layers: int) -> float:
    """The alpha ``scheme`` gives the tensor named ``key`` of a ``layers``-layer encoder (embeddings: -1,
    the pooler: the top layer)."""
    m = _LAYER.search(key)
    depth = int(m.group(1)) if m else (-1 if "embeddings" in key else layers - 1)
    if scheme == "start":
        return 0.0
    kind, _, arg = scheme.rpartition("-") if scheme[-1].isdigit() else (scheme, "", "")
    if kind == "uniform":
        return float(arg)
    if scheme == "keep-embeddings":
        return 0.0 if depth < 0 else 1.0
    if kind == "keep-lower":
        return 0.0 if depth < int(arg) else 1.0
    if kind == "ramp":
        low = float(arg)
        return 0.0 if depth < 0 else low + (1.0 - low) * depth / (layers - 1)
    raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")


def merged_state(base: dict, tuned: dict, scheme: str, layers: int) -> dict:
    import torch

    out = {}
    for key, b in base.items():
        t = tuned[key]
        a = alpha_of(scheme, key, layers)
        out[key] = t.clone() if not b.is_floating_point() else torch.lerp(b.float(), t.float(), a).to(b.dtype)
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


def run(schemes: list[str], tuned_path: Path) -> None:
    from textcl.models import Encoder

    base = Encoder.load(BASE, device="cpu").state_dict()
    enc = Encoder.load(tuned_path, device="cpu")
    tuned = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    layers = enc.model.config.num_hidden_layers
    CACHE.mkdir(parents=True, exist_ok=True)
    for scheme in schemes:
        path = CACHE / f"{scheme}.json"
        if path.exists():
            continue
        t0 = time.perf_counter()
        enc.load_state_dict(merged_state(base, tuned, scheme, layers))
        record = {"scheme": scheme, "tuned": str(tuned_path), "scores": score(enc),
                  "seconds": round(time.perf_counter() - t0, 1)}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)
        print(scheme, json.dumps(record["scores"]), flush=True)


def report() -> str:
    rows = {p.stem: json.loads(p.read_text())["scores"] for p in CACHE.glob("*.json")}
    if "start" not in rows:
        return "the starting model has not been scored yet"
    start = rows["start"]
    names = ["stsb-dev", "stsb-test", *OFF_TASK]
    lines = ["| merge | " + " | ".join(names) + " | guards kept (chooser) | every off-task set within 1 | target met |",
             "|" + "---|" * (len(names) + 4)]
    order = [s for s in SCHEMES if s in rows] + sorted(set(rows) - set(SCHEMES))
    for s in order:
        r = rows[s]
        kept = all(r[g][0] >= start[g][0] - TOLERANCE for g in GUARDS)
        every = all(r[g][0] >= start[g][0] - TOLERANCE for g in OFF_TASK)
        cells = [f"{r[n][0]:.2f}" + ("" if s == "start" else f" ({r[n][0] - start[n][0]:+.2f})") for n in names]
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {'yes' if kept else 'no'} | {'yes' if every else 'no'} | "
                     + ("yes" if every and r["stsb-test"][0] >= TARGET_TEST else "no") + " |")
    kept = [s for s in order if all(rows[s][g][0] >= start[g][0] - TOLERANCE for g in GUARDS)]
    chosen = max(kept, key=lambda s: rows[s]["stsb-dev"][0])
    lines.append(f"\nThe chooser's pick (best STS-B dev among the merges whose two guards stay within {TOLERANCE:g}): "
                 f"{chosen}: STS-B test {rows[chosen]['stsb-test'][0]:.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemes", nargs="+", default=SCHEMES)
    parser.add_argument("--tuned", type=Path, default=TUNED, help="the fine-tuned model folder")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if not args.report:
        run(args.schemes, args.tuned)
    print(report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
