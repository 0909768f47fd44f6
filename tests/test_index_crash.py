"""An index save killed at any step: the folder loads (checksums verified) as the old or the new version."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _crash import CRASH_AT_EVERY_STEP
from textcl.index import SearchIndex

DIM = 16

# In a child process: load INDEX, delete d0, add d6 and d7, save, dying (os._exit, as SIGKILL would: no
# cleanup) at the CRASH_AT-th file-system step of the save.
KILLED_SAVE = textwrap.dedent("""
    import sys
    import numpy as np
    from textcl.index import SearchIndex

    path, crash_at, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    index = SearchIndex.load(path)
    index.delete(["d0"])
    index.add(["six", "seven"], ["d6", "d7"], embeddings=np.random.default_rng(1).standard_normal((2, dim)))
""") + CRASH_AT_EVERY_STEP + textwrap.dedent("""
    index.save(path)
    print("saved", steps)
""")
OLD = {f"d{i}" for i in range(6)}
NEW = OLD - {"d0"} | {"d6", "d7"}


@pytest.mark.parametrize("factory", ["Flat", "SQ8+rescore"])
def test_a_save_killed_at_any_step_leaves_a_loadable_old_or_new_index(tmp_path, factory):
    path = tmp_path / "ix"
    x = np.random.default_rng(0).standard_normal((6, DIM)).astype(np.float32)
    outcomes = []
    for crash_at in range(200):
        SearchIndex.build([f"text {i}" for i in range(6)], sorted(OLD), embeddings=x, factory=factory).save(path)
        run = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path), str(crash_at), str(DIM)],
                             capture_output=True, text=True)
        assert run.returncode in (0, 17), run.stderr
        index = SearchIndex.load(path)  # verifies both checksums and the vector file
        ids = {row[0] for row in index.store.query("SELECT doc_id FROM docs")}
        assert ids in (OLD, NEW), f"killed at step {crash_at}: {sorted(ids)}"
        [hits] = index.search(x[1:2], k=10)
        assert {h.id for h in hits} == ids and hits[0].id == "d1"
        index.close()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"], f"killed at step {crash_at}: leftovers"
        outcomes.append(ids == NEW)
        if run.returncode == 0:
            break
    else:
        pytest.fail("the save never finished")
    assert not outcomes[0] and outcomes[-1]
