"""Two real processes on the CPU gloo backend, DDP-wrapped, equal one process on the concatenated batch."""
from __future__ import annotations

import sys
from pathlib import Path
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))  # the shared scenarios, whatever the import mode
import _dist_gather as sc  # noqa: E402

pytestmark = pytest.mark.slow
SPLITS = [(3, 3), (4, 2)]  # even, and a short last batch on rank 1


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_two_gloo_processes_equal_one_process(tmp_path):
    mp.start_processes(sc.worker, args=(2, str(tmp_path / "init"), str(tmp_path), SPLITS), nprocs=2,
                       join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    data = sc.make_data()
    for sizes in SPLITS:
        for name in sc.CONFIGS:
            ref_loss, ref_grads = sc.reference(name, data)
            (l0, g0), (l1, g1) = ranks[0][sizes, name], ranks[1][sizes, name]
            assert torch.allclose((l0 + l1) / 2, ref_loss, atol=1e-5), (sizes, name, l0, l1, ref_loss)
            assert len(g0) == len(ref_grads)
            for a, b, ref in zip(g0, g1, ref_grads):
                assert torch.allclose(a, b, atol=1e-6), (sizes, name)  # DDP left both ranks the same grads
                assert torch.allclose(a, ref, atol=1e-5), (sizes, name, (a - ref).abs().max())
