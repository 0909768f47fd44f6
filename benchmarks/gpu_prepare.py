"""Prepare what benchmarks/gpu.sh carries to a GPU machine that has no network: run here, once.

Writes ``.gpu/`` (git-ignored): the packaged all-MiniLM-L6-v2 with its weights in fp16 safetensors (45 MB
instead of 91 MB; training loads them back as fp32 parameters), and the scenario data of bench_train.py
(built from the packaged Wikipedia, which is not installed there) at the sizes gpu.sh uses.

    python benchmarks/gpu_prepare.py
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train  # noqa: E402
import shapes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".gpu"


def main() -> None:
    from textcl.models import packaged_minilm_path

    src = packaged_minilm_path()
    model = OUT / "minilm"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(src, model, ignore=shutil.ignore_patterns("*.bin", "*.onnx", "onnx", "openvino", "*.h5",
                                                              "*.msgpack", "*.ot"))
    for f in model.rglob("*.safetensors"):
        weights = load_file(str(f))
        save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, str(f),
                  metadata={"format": "pt"})
    for scenario in bench_train.SCENARIOS.values():  # the data files, at the GPU sizes too
        for scale in (1, bench_train.GPU_SCALE):
            bench_train.data_file({**scenario, "batch": scenario["batch"] * scale})
    data = OUT / "shapes"
    if data.exists():
        shutil.rmtree(data)
    shutil.copytree(shapes.CACHE, data, ignore=shutil.ignore_patterns("heldout-beir", "*.tmp"))
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"{OUT}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
