"""loss.mini_batch_size auto: a row's activation memory measured, the budget, the largest mini-batch that fits,
and a training run under a memory limit it must respect."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from textcl import losses
from textcl.config import config_from_dict
from textcl.errors import ConfigError, TextclError
from textcl.models import Encoder, memory
from textcl.models.memory import (ALLOCATOR_OVERHEAD, LIMIT_ENV, TRANSIENT_COPIES, balanced_mini_batch, fit_mini_batch,
                                  largest_fit, memory_budget, parse_bytes, row_memory)
from textcl.train import train

from test_train import assert_same_weights, corpus, make_config  # noqa: F401  (fixture)


# ---------------------------------------------------------------------------------------------- hand-computable
def test_the_fit_is_the_floor_of_budget_over_cost_made_into_equal_passes_and_never_above_the_batch():
    assert largest_fit(1000, 45_999) == 45
    assert largest_fit(1000, 1000) == 1
    with pytest.raises(TextclError, match=r"one row needs 1000 B for its forward and backward, over the budget 999 B"):
        largest_fit(1000, 999)
    assert fit_mini_batch(1000, 10_500, 64) == 10  # 10 fit: 7 passes of ceil(64 / 7) = 10
    assert fit_mini_batch(1000, 45_999, 100) == 34  # 45 fit: 3 passes, 34 + 34 + 32 rows rather than 45 + 45 + 10
    assert fit_mini_batch(1000, 3_000_000, 4096) == 2048
    assert fit_mini_batch(1000, 10**12, 64) == 64  # the whole batch fits: one pass
    for budget in range(1000, 70_000, 997):
        m = fit_mini_batch(1000, budget, 64)
        assert 1 <= m <= min(64, budget // 1000)
        assert -(-64 // m) == -(-64 // min(64, budget // 1000))  # as few passes as the largest fit takes
    assert balanced_mini_batch(8, 5) == 4


def test_the_budget_is_the_free_memory_share_or_the_limit_less_what_is_held_less_the_reserve():
    b = memory_budget(torch.device("cpu"), free=10_000, fraction=0.8, reserve=1_000, held=500, limit=5_000)
    assert b.bytes == min(8_000, 5_000 - 500) - 1_000 == 3_500
    assert memory_budget(torch.device("cpu"), free=10_000, fraction=0.8, reserve=1_000).bytes == 7_000
    shared = memory_budget(torch.device("cpu"), free=10_000, fraction=0.8, reserve=1_000, share=2)
    assert shared.bytes == 8_000 // 2 - 1_000 and "/ 2 processes" in shared.line()
    # the limit is the run's: 4 processes on one machine take a quarter each
    assert memory_budget(torch.device("cpu"), free=10**9, limit=8_000, share=4).bytes == 2_000
    assert b.line() == f"budget 3.4 KiB ({LIMIT_ENV} 4.9 KiB less 500 B held and 1000 B reserved)"
    assert memory_budget(torch.device("cpu"), free=10_000, fraction=0.8, reserve=1_000, held=500,
                         limit=50_000).line() == "budget 6.8 KiB (0.8 x 9.8 KiB free, less 1000 B reserved)"


def test_the_row_cost_of_a_linear_relu_is_its_saved_input_and_output():
    """Linear(8, 16) + ReLU saves its input (8 floats a row) and its output (16): 96 bytes a row, the largest
    tensor that grows with the rows is the output (64 bytes), and the weight (saved too) does not grow."""
    torch.manual_seed(0)
    lin = nn.Linear(8, 16)

    def embed(features):
        return torch.relu(lin(features["input_ids"]))

    row = {"input_ids": torch.randn(1, 8)}
    got = row_memory(embed, row, rows=3)
    assert (got.saved, got.largest, got.tokens) == (96, 64, 8)
    assert got.bytes == int((96 + TRANSIENT_COPIES * 64) * ALLOCATOR_OVERHEAD["cpu"])


def test_parse_bytes_and_the_limit_variable(monkeypatch):
    assert parse_bytes("8GiB") == 8 * 2**30 and parse_bytes("512 MiB") == 512 * 2**20
    assert parse_bytes("2GB") == 2 * 10**9 and parse_bytes("123456") == 123456 and parse_bytes("1.5KiB") == 1536
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    assert memory.memory_limit() is None
    for bad in ("lots", "0", "-5GiB", "8 parsecs", "1e400"):
        monkeypatch.setenv(LIMIT_ENV, bad)
        with pytest.raises(ConfigError, match=rf"{LIMIT_ENV}: expected a positive number of bytes.*got '{bad}'"):
            memory.memory_limit()


def test_a_containers_memory_limit_bounds_the_free_memory(tmp_path):
    """cgroup v2 (the limit of the cgroup or of an ancestor, whichever is tighter) and v1 (its memory
    controller, where "no limit" is a huge number); inactive page cache counts as free."""
    proc = tmp_path / "cgroup"

    def write(folder, **files):
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name.replace("_", ".", 1)).write_text(text)

    root = tmp_path / "sys"
    write(root / "job", memory_max="1000000", memory_current="600000", memory_stat="anon 1\ninactive_file 100000\n")
    write(root / "job" / "step", memory_max="max", memory_current="500000", memory_stat="inactive_file 0\n")
    proc.write_text("0::/job/step\n")
    assert memory._cgroup_available(proc, root) == 1000000 - 600000 + 100000
    write(root / "job" / "step", memory_max="450000", memory_current="500000", memory_stat="inactive_file 0\n")
    assert memory._cgroup_available(proc, root) == 0  # over its own limit: nothing left
    write(root / "memory", memory_limit_in_bytes=str(2**63 - 4096), memory_usage_in_bytes="5",
          memory_stat="total_inactive_file 0\n")
    proc.write_text("4:memory:/gone/in/this/namespace\n1:cpu:/\n")
    assert memory._cgroup_available(proc, root) is None
    write(root / "memory", memory_limit_in_bytes="8000", memory_usage_in_bytes="3000",
          memory_stat="total_inactive_file 500\n")
    assert memory._cgroup_available(proc, root) == 5500
    assert memory._cgroup_available(tmp_path / "missing", root) is None


# ---------------------------------------------------------------------------------------------- measured
def _bert(tiny_bert_dir) -> Encoder:
    encoder = Encoder.load(str(tiny_bert_dir), device="cpu")
    encoder.train()
    return encoder


def test_the_saved_bytes_grow_linearly_with_the_rows_and_with_the_length(tiny_bert_dir):
    encoder = _bert(tiny_bert_dir)
    weights = {t.untyped_storage().data_ptr() for t in (*encoder.parameters(), *encoder.buffers())}
    text = " ".join(["the cat sat on the mat and the dog ran"] * 20)

    def activations(rows: int, length: int) -> int:
        feats = {k: v.expand(rows, -1).contiguous() for k, v in encoder.tokenize([text], max_length=length).items()}
        out, seen = memory.saved_storages(lambda: encoder(feats))
        return sum(size for ptr, size in seen.items() if ptr not in weights)

    for length in (16, 64):
        assert activations(8, length) == pytest.approx(2 * activations(4, length), rel=0.02)
    per_row = {n: row_memory(encoder, encoder.tokenize([text], max_length=n)).saved for n in (16, 32, 64)}
    assert per_row[16] < per_row[32] < per_row[64]
    assert per_row[64] / per_row[16] >= 4  # linear in the tokens at least (attention adds a quadratic part)
    assert per_row[16] == pytest.approx(activations(4, 16) / 4, rel=0.02)  # the probe's slope is the real count


def test_the_probe_leaves_the_random_state_and_the_gradients_alone(tiny_bert_dir):
    encoder = _bert(tiny_bert_dir)
    state = torch.get_rng_state()
    row_memory(encoder, encoder.tokenize(["a cat sat on the mat"], max_length=16),
               params=list(encoder.parameters()))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in encoder.parameters())


# ---------------------------------------------------------------------------------------------- training
def _auto(tiny_bert_dir, corpus, **extra):
    common = {"loss": {"cached": True, "mini_batch_size": "auto"}, "train": {"batch_size": 8, "max_steps": 2}}
    for key, value in extra.items():
        common.setdefault(key, {}).update(value)
    return make_config(tiny_bert_dir, corpus, **common)


def _measured(config, out) -> memory.MiniBatchChoice:
    """What the run's build measures: the row cost, what it holds and what it reserves."""
    from textcl.train.build import build

    return build(config, out).mini_batch


def test_auto_under_a_memory_limit_respects_it_and_trains_as_that_explicit_mini_batch(
        tiny_bert_dir, corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(LIMIT_ENV, "1TiB")
    config = _auto(tiny_bert_dir, corpus)
    probe = _measured(config, tmp_path / "probe")
    assert probe.resolved == 8  # unconstrained, the whole batch of 8 is one pass
    row, held, reserve = probe.row.bytes, probe.budget.held, probe.budget.reserve
    limit = held + reserve + int(5.5 * row)  # room for 5 rows' activations
    monkeypatch.setenv(LIMIT_ENV, str(limit))
    capsys.readouterr()

    replays = []  # (rows, bytes saved) of each GradCache replay: a forward with a graph, the weights excluded
    real_cached_backward = losses.cached_backward

    def counted(embed):
        def replay(chunk):
            if not torch.is_grad_enabled():  # pass 1: embeddings without a graph
                return embed(chunk)
            weights = {t.untyped_storage().data_ptr() for t in (*embed.parameters(), *embed.buffers())}
            out, seen = memory.saved_storages(lambda: embed(chunk))
            replays.append((chunk["input_ids"].shape[0], sum(s for p, s in seen.items() if p not in weights)))
            return out
        return replay

    monkeypatch.setattr(losses, "cached_backward", lambda views, *a, **k: real_cached_backward(
        [(counted(fn), x) for fn, x in views], *a, **k))
    result = train(config, output_dir=tmp_path / "auto")
    monkeypatch.setattr(losses, "cached_backward", real_cached_backward)
    chosen = result.metrics["mini_batch_size"]
    assert chosen["resolved"] == 4  # 5 fit: 2 passes of 4 rows over the batch of 8
    assert chosen["budget"]["limit"] == limit and chosen["budget"]["bytes"] == limit - held - reserve
    lines = [line for line in capsys.readouterr().out.splitlines() if "GradCache mini-batch" in line]
    assert len(lines) == 1 and lines[0].startswith("textcl: GradCache mini-batch auto -> 4 (2 passes over 8 rows")
    assert json.loads((tmp_path / "auto" / "metrics.json").read_text())["mini_batch_size"]["resolved"] == 4

    # the real replays held at most 4 rows, and what they saved fits the budget the limit left
    assert replays and max(rows for rows, _ in replays) == 4
    budget = chosen["budget"]["bytes"]
    assert max(saved for _, saved in replays) * ALLOCATOR_OVERHEAD["cpu"] <= budget
    per_row = max(saved / rows for rows, saved in replays)
    assert 8 * per_row * ALLOCATOR_OVERHEAD["cpu"] > budget  # the limit binds: the whole batch would not fit

    explicit = make_config(tiny_bert_dir, corpus, loss={"cached": True, "mini_batch_size": 4},
                           train={"batch_size": 8, "max_steps": 2})
    train(explicit, output_dir=tmp_path / "explicit")
    assert_same_weights(tmp_path / "auto", tmp_path / "explicit", atol=1e-5)


def test_a_limit_too_small_for_one_row_fails_naming_the_budget_and_the_row(tiny_bert_dir, corpus, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "1TiB")
    probe = _measured(_auto(tiny_bert_dir, corpus), tmp_path / "probe")
    monkeypatch.setenv(LIMIT_ENV, str(probe.budget.held + probe.budget.reserve + probe.row.bytes // 2))
    with pytest.raises(TextclError, match=r"loss.mini_batch_size auto: one row needs [0-9.]+ KiB for its forward "
                                          r"and backward, over the budget [0-9.]+ KiB \(TEXTCL_MEMORY_LIMIT [0-9.]+ "
                                          r"MiB less [0-9.]+ MiB held and [0-9.]+ MiB reserved\); lower "
                                          r"model.max_seq_len"):
        train(_auto(tiny_bert_dir, corpus), output_dir=tmp_path / "run")


def test_a_resumed_auto_run_keeps_its_mini_batch_and_refuses_one_that_no_longer_fits(
        tiny_bert_dir, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "1TiB")
    config = _auto(tiny_bert_dir, corpus, train={"max_steps": 4, "checkpoint_every": 2})
    probe = _measured(config, tmp_path / "probe")
    tight = probe.budget.held + probe.budget.reserve + int(5.5 * probe.row.bytes)
    monkeypatch.setenv(LIMIT_ENV, str(tight))
    straight = train(config, output_dir=tmp_path / "straight")
    assert straight.metrics["mini_batch_size"]["resolved"] == 4
    train(config, output_dir=tmp_path / "split", stop_after_step=2)
    monkeypatch.setenv(LIMIT_ENV, "1TiB")  # a fresh measurement would now take the whole batch of 8
    resumed = train(config, output_dir=tmp_path / "split", resume=True)
    assert resumed.metrics["mini_batch_size"]["resolved"] == 4 and resumed.metrics["mini_batch_size"]["resumed"]
    assert_same_weights(tmp_path / "straight", tmp_path / "split", atol=1e-5)

    monkeypatch.setenv(LIMIT_ENV, str(tight))
    train(config, output_dir=tmp_path / "small", stop_after_step=2)  # mini-batches of 4 again
    monkeypatch.setenv(LIMIT_ENV, str(probe.budget.held + probe.budget.reserve + int(2.5 * probe.row.bytes)))
    with pytest.raises(TextclError, match=r"trained with mini-batches of 4 rows, and 2 fit here .*"
                                          r"set loss.mini_batch_size: 2 to resume with smaller ones"):
        train(config, output_dir=tmp_path / "small", resume=True)
    explicit = _auto(tiny_bert_dir, corpus, loss={"mini_batch_size": 2}, train={"max_steps": 4, "checkpoint_every": 2})
    assert train(explicit, output_dir=tmp_path / "small", resume=True).finished  # the way out the message names


def test_the_probe_takes_each_towers_longest_row_of_the_data(tiny_bert_dir, tmp_path):
    """Two towers: the query tower is probed on the longest anchor, the document tower on the longest of the
    positives and negatives, counted in tokens (the negative with the most characters is one unknown word); with
    a text augmenter the views may grow, so the probe is as long as model.max_seq_len."""
    from textcl.train.build import _widest_rows

    long_positive = " ".join(["cat"] * 30)  # 119 characters, 32 tokens
    wordy = "supercalifragilistic" * 6  # 120 characters, [CLS] [UNK] [SEP]
    rows = [{"anchor": f"a dog {i}", "positive": f"the mat {i}", "negative": f"it ran {i}"} for i in range(7)]
    rows += [{"anchor": "the cat sat on the mat", "positive": long_positive, "negative": wordy}]
    data = tmp_path / "triples.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = make_config(tiny_bert_dir, data, data={"kind": "triples"}, model={"two_tower": True, "max_seq_len": 64},
                         loss={"cached": True, "mini_batch_size": "auto"})
    query, document = Encoder.load(str(tiny_bert_dir), device="cpu"), Encoder.load(str(tiny_bert_dir), device="cpu")
    from textcl.data.pairs import load_examples

    examples = load_examples(config.data)
    widths = {id(enc): row["input_ids"].shape[1] for enc, row in _widest_rows(config, examples, [query, document],
                                                                              augmented=False)}
    tokens = {t: len(query.tokenize([t])["input_ids"][0]) for t in (long_positive, wordy, "the cat sat on the mat")}
    assert widths[id(query)] == tokens["the cat sat on the mat"]
    assert len(wordy) > len(long_positive) and tokens[wordy] < tokens[long_positive]
    assert widths[id(document)] == tokens[long_positive] > tokens["the cat sat on the mat"]
    augmented = _widest_rows(config, examples, [query, document], augmented=True)
    assert [row["input_ids"].shape[1] for _, row in augmented] == [64, 64]


def test_processes_take_the_smallest_fit_and_a_failure_anywhere_stops_all(monkeypatch):
    """Each process measures its own device; the all-reduce (here: another process that fits 3) gives the
    minimum, and a process that could not fit a row (0) stops the others too."""
    import torch.distributed as dist

    from textcl.train.build import _smallest_across

    other = {"value": 3}

    def all_reduce(t, op):
        assert op == dist.ReduceOp.MIN
        t.fill_(min(int(t.item()), other["value"]))

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    cpu = torch.device("cpu")
    assert _smallest_across(2, cpu, 7, None) == 3
    assert _smallest_across(2, cpu, 2, None) == 2
    assert _smallest_across(1, cpu, 7, None) == 7  # one process: no collective
    with pytest.raises(TextclError, match="its own"):
        _smallest_across(2, cpu, 7, TextclError("its own message"))
    other["value"] = 0
    with pytest.raises(TextclError, match="another process could not fit one row"):
        _smallest_across(2, cpu, 7, None)


# ---------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("value", ["big", 0, -4, True, 2.5])
def test_a_mini_batch_that_is_neither_a_positive_integer_nor_auto_names_the_field(tiny_bert_dir, corpus, value):
  
    with pytest.raises(ConfigError, match=r"loss.mini_batch_size: expected a positive integer or auto, got "):
        config_from_dict({"model": {"name": str(tiny_bert_dir)}, "data": {"path": str(corpus)},
                          "loss": {"cached": True, "mini_batch_size": value}})


def test_auto_without_gradcache_is_refused(tiny_bert_dir, corpus):
    with pytest.raises(ConfigError, match=r"loss.mini_batch_size: is set \('auto'\) but is GradCache's mini-batch"):
        config_from_dict({"model": {"name": str(tiny_bert_dir)}, "data": {"path": str(corpus)},
                          "loss": {"mini_batch_size": "auto"}})
