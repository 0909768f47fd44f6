"""`mixed_precision: auto` on the three CPU classes: does the quickstart under ``auto`` train within 1.1x the time
of the faster explicit precision, on AVX2-only, AVX-512 without bf16, and AVX-512 bf16 / AMX CPUs?

One machine stands in for the older classes by capping the instructions torch's kernels may use, the way
oneDNN, MKL and ATen document it: ``ONEDNN_MAX_CPU_ISA`` (bf16 matrix products then run emulated, as on a CPU
without avx512_bf16/AMX), ``MKL_ENABLE_INSTRUCTIONS`` (fp32 GEMMs) and ``ATEN_CPU_CAPABILITY`` (elementwise
kernels). Caches, cores and clock stay those of the host, so read the ratios within a class, not the absolute
times across classes.

Arms, each a fresh process with an empty ``TEXTCL_CACHE`` (so ``auto`` pays for its measurement, as on a first
run): ``auto``, ``no`` (fp32) and ``bf16``, the whole recipe (``recipes/quickstart.yaml``: 60 steps and its
STS-B evaluations) timed around ``train()``. Where bf16 is emulated its full run would take many times the
fp32 one, so it runs ``--emulated-steps`` steps without evaluations and is reported per step.

    python benchmarks/bench_cpu_classes.py [--classes amx avx512 avx2] [--rounds 2] [--emulated-steps 8]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "quickstart.yaml"
CLASSES = {
    "amx": {},  # the host as it is (on an AVX-512 bf16 / AMX CPU)
    "avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}


def child(precision: str, steps: int | None, out: str) -> None:
    from textcl.config import load_config
    from textcl.train import train

    overrides = [f"train.mixed_precision={precision}", f"output_dir={out}", "train.report_to=none",
                 "train.plot=false"]
    if steps:
        overrides += [f"train.max_steps={steps}", "eval.every=0", "eval.before=false", "eval.data=[]", "eval.test=[]",
                      "train.checkpoint_every=0", "model.save_max_seq_len=false"]
    config = load_config(RECIPE, overrides)
    start = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - start
    metrics = result.metrics
    print("RESULT " + json.dumps({"wall_s": wall, "steps": result.steps, "precision": metrics.get("precision"),
                                  "time": metrics.get("time"), "best_score": metrics.get("best_score")}))


def run_arm(cls: str, precision: str, steps: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **CLASSES[cls], "TEXTCL_CACHE": str(Path(tmp) / "cache")}
        cmd = [sys.executable, __file__, "--child", precision, str(steps or 0), str(Path(tmp) / "run")]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{cls} {precision} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", nargs="+", default=list(CLASSES), choices=list(CLASSES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--emulated-steps", type=int, default=8)
    parser.add_argument("--child", nargs=3, metavar=("PRECISION", "STEPS", "OUT"))
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]) or None, args.child[2])
    rows = []
    for cls in args.classes:
        probe = run_arm(cls, "bf16", args.emulated_steps)  # is bf16 emulated here? (per-step, no evaluations)
        probe_fp32 = run_arm(cls, "no", args.emulated_steps)
        per_step = {"bf16": probe["time"]["train_s"] / probe["steps"], "no": probe_fp32["time"]["train_s"] / probe_fp32["steps"]}
        full_bf16 = per_step["bf16"] < 2 * per_step["no"]  # else a full bf16 run is certain to lose
        arms = ["auto", "no"] + (["bf16"] if full_bf16 else [])
        walls: dict[str, list[float]] = {a: [] for a in arms}
        resolved = {}
        for r in range(args.rounds):
            for arm in arms:
                res = run_arm(cls, arm, None)
                walls[arm].append(res["wall_s"])
                if arm == "auto":
                    resolved = res["precision"]
                print(f"[{cls}] round {r + 1} {arm}: {res['wall_s']:.1f} s (train {res['time']['train_s']:.1f} s, "
                      f"eval {res['time']['eval_s']:.1f} s), precision {res['precision']}, best {res['best_score']:.2f}",
                      flush=True)
        med = {a: statistics.median(v) for a, v in walls.items()}
        fastest = min((a for a in arms if a != "auto"), key=med.get)
        rows.append((cls, resolved, per_step, med, fastest, full_bf16))
        print(f"[{cls}] per step ({args.emulated_steps} steps, no eval): bf16 {per_step['bf16']:.2f} s, "
              f"fp32 {per_step['no']:.2f} s; auto -> {resolved.get('resolved')} "
              f"(bf16/fp32 measured {resolved.get('bf16_over_fp32')}); auto {med['auto']:.1f} s vs {fastest} "
              f"{med[fastest]:.1f} s = {med['auto'] / med[fastest]:.2f}x", flush=True)
    print("\n| class | auto chose | probe bf16/fp32 | step bf16 / fp32 (s) | quickstart auto | fp32 | bf16 | auto / fastest |")
    print("|---|---|---|---|---|---|---|---|")
    for cls, resolved, per_step, med, fastest, full_bf16 in rows:
        bf16 = f"{med['bf16']:.1f} s" if full_bf16 else "not run (emulated)"
        print(f"| {cls} | {resolved.get('resolved')} | {resolved.get('bf16_over_fp32')} | "
              f"{per_step['bf16']:.2f} / {per_step['no']:.2f} | {med['auto']:.1f} s | {med['no']:.1f} s | {bf16} | "
              f"**{med['auto'] / med[fastest]:.2f}x** |")


if __name__ == "__main__":
    main()
