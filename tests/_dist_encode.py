"""Run by tests/test_encode_sharded.py under torchrun: `textcl encode` and `textcl index build` through the real
CLI, each rank as torchrun started it. argv: MODEL TEXTS DOCS OUT_DIR."""
import sys
from pathlib import Path

from textcl.cli import main

model, texts, docs, out = sys.argv[1:5]
for argv in (["encode", "--model", model, "--input", texts, "--out", str(Path(out) / "emb.npy"), "--batch-size", "4"],
             ["index", "build", "--model", model, "--input", docs, "--out", str(Path(out) / "index"),
              "--chunk-size", "8", "--batch-size", "4"]):
    rc = main(argv)
    if rc:
        sys.exit(rc)
