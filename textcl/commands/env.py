"""``textcl env``: the machine profile textcl's automatic choices come from, for bug reports.

Prints the library versions, the CPU (model, the vector and matrix flags, usable cores, torch's kernel level and
threads, and what oneDNN claims about bf16 beside what the flags say), the GPU, the settings textcl reads from the
environment, and every cached measurement (``$TEXTCL_CACHE/calibration``) with its figures. ``--measure`` runs
the measurements ``mixed_precision: auto``, the trainer's chunk cost and ``--backend auto`` use, for a model, now.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="print the machine profile and the cached measurements behind textcl's "
                                   "automatic choices (for bug reports)")
    p.add_argument("--json", metavar="PATH", help="write the profile as JSON to PATH ('-' for standard output)")
    p.add_argument("--measure", action="store_true",
                   help="measure bf16 against fp32, the per-chunk cost and ONNX Runtime against torch for --model now "
                        "(cached, as training and --backend auto do)")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="the model --measure measures (default: the packaged all-MiniLM-L6-v2)")
    p.set_defaults(func=run)


def profile() -> dict:
    """Everything ``textcl env`` reports, as one JSON-able dict."""
    import torch

    from textcl.models.calibration import cache_dir, list_calibrations, machine_profile
    from textcl.models.precision import native_bf16
    from textcl.versions import distribution_version, environment

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    machine = machine_profile(device_type)
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn_bf16 = None
    versions = {**environment(), **{name: distribution_version(name) for name in ("accelerate", "datasets",
                                                                                   "onnxruntime")}}
    return {
        "versions": versions,
        "platform": platform.platform(),
        "machine": {**machine, "bf16_instructions": native_bf16("cpu"),
                    "onednn_reports_bf16": onednn_bf16, "cuda_available": torch.cuda.is_available()},
        "settings": {name: os.environ.get(name) for name in ("TEXTCL_CACHE", "TEXTCL_BACKEND", "OMP_NUM_THREADS",
                                                             "CUDA_VISIBLE_DEVICES")},
        "cache": str(cache_dir()),
        "calibrations": list_calibrations(),
    }


def measure(model: str) -> list[str]:
    """Run (or read from the cache) the precision, chunk-cost and backend measurements for ``model``; one line
    each."""
    import torch

    from textcl.models import Encoder
    from textcl.models.chunking import measured_chunk_overhead
    from textcl.models.precision import choose_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = Encoder.load(model, device=device)
    config = encoder.model.config
    choice = choose_precision("auto", device, hidden=int(config.hidden_size),
                              intermediate=int(getattr(config, "intermediate_size", 0) or 4 * config.hidden_size))
    lines = [f"{model}: {choice.line()}"]
    for bf16 in ([False, True] if choice.resolved == "bf16" else [False]):
        tokens, entry = measured_chunk_overhead(encoder, bf16=bf16)
        lines.append(f"{model}: chunk cost {tokens} tokens in {'bf16' if bf16 else 'fp32'} on this {device.upper()}"
                     + (" (cached)" if entry["cached"] else "")
                     + ("" if entry["steady"] else " (the default: the measurement was disturbed by other work)"))
    encoder.use_backend("auto", announce=False)  # last: the chunk cost above is measured in torch
    lines.append(f"{model}: {encoder.backend_choice.line()}")
    return lines


def _text(report: dict) -> str:
    m = report["machine"]
    lines = ["textcl env", "", "versions:"]
    lines += [f"  {k}: {v or 'not installed'}" for k, v in report["versions"].items()]
    lines += ["", f"platform: {report['platform']}",
              f"cpu: {m['cpu']} ({m['cores']} usable cores, torch threads {m['threads']}, "
              f"kernels {m['cpu_capability']})",
              f"cpu flags: {' '.join(m['cpu_flags']) or 'none of avx2, avx512f, avx512_bf16, amx'}",
              f"bf16 instructions: {'yes' if m['bf16_instructions'] else 'no'} (oneDNN reports bf16 supported: "
              f"{m['onednn_reports_bf16']})"]
    if m.get("gpu"):
        lines.append(f"gpu: {m['gpu']} (compute {m['gpu_capability']}, {m['gpu_memory_gib']} GiB, CUDA {m['cuda']})")
    else:
        lines.append("gpu: none")
    lines += ["", "settings:"] + [f"  {k}={v}" for k, v in report["settings"].items() if v is not None]
    lines += ["", f"measurements cached in {report['cache']}:"]
    if not report["calibrations"]:
        lines.append("  none yet (training with mixed_precision: auto and --backend auto measure; or run textcl env "
                     "--measure)")
    for e in report["calibrations"]:
        shape = ", ".join(f"{k} {v}" for k, v in e["shape"].items())
        values = ", ".join(f"{k} {v:.4g}" for k, v in e["values"].items())
        where = e["profile"].get("gpu") or e["profile"].get("cpu")
        lines.append(f"  {e['kind']} [{shape}] on {e['profile']['device']} ({where}): {values}  ({e['measured_at']})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from textcl._io import atomic_write_json, check_writable

    if args.json and args.json != "-":
        check_writable(args.json, "--json")
    if args.measure:
        for line in measure(args.model):
            print(line, file=sys.stderr if args.json == "-" else sys.stdout)
    report = profile()
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        print(_text(report))
        if args.json:
            atomic_write_json(args.json, report)
    return 0
