"""Length-homogeneous chunks: the plan is optimal on hand cases, and chunked equals unchunked (1e-5)."""
import json

import numpy as np
import pytest
import torch

from textcl.models import Encoder
from textcl.models.chunking import forward_by_length, plan_chunks, row_lengths

QUERIES = ["who wrote it", "cats", "the tallest mountain in the alps", "why is the sky blue", "rain", "a b c d e f"]
PASSAGES = [" ".join(["word"] * n) + f" passage {i}" for i, n in enumerate([60, 3, 25, 90, 8, 40])]


def test_plan_hand_cases():
    # two long rows and two short ones: 2*100 + 2*10 + 2*50 = 320 beats one chunk (4*100 + 50 = 450)
    assert plan_chunks([100, 100, 10, 10], overhead=50) == [(0, 2), (2, 4)]
    # a chunk costing more than the padding it saves is not cut: 4*100 + 1000 < 2*100 + 2*10 + 2000
    assert plan_chunks([100, 100, 10, 10], overhead=1000) == [(0, 4)]
    # overhead 0: every distinct length its own chunk, and equal lengths never split
    assert plan_chunks([5, 5, 3, 3, 3, 1], overhead=0) == [(0, 2), (2, 5), (5, 6)]
    assert plan_chunks([7], overhead=10) == [(0, 1)]
    assert plan_chunks([], overhead=10) == []


def test_plan_is_the_least_cost_partition():
    rng = np.random.default_rng(0)
    lengths = np.sort(rng.integers(1, 40, size=9))[::-1]

    def cost(bounds):
        return sum((b - a) * lengths[a] + 30 for a, b in bounds)

    def all_partitions(start):  # every way to cut [start, 9) into consecutive chunks
        if start == len(lengths):
            yield []
        for stop in range(start + 1, len(lengths) + 1):
            for rest in all_partitions(stop):
                yield [(start, stop)] + rest

    best = min(cost(p) for p in all_partitions(0))
    assert cost(plan_chunks(lengths, overhead=30)) == best


def test_plan_rejects_unsorted_lengths_and_negative_overhead():
    with pytest.raises(ValueError, match="non-increasing"):
        plan_chunks([3, 5, 1])
    with pytest.raises(ValueError, match="overhead: expected a non-negative"):
        plan_chunks([3, 2], overhead=-1)


def test_row_lengths_reach_the_last_attended_position():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    assert row_lengths(mask).tolist() == [3, 4, 5, 0]  # a mid-row 0 (token cutoff) does not shorten a row


def _tiny(tiny_bert_dir, pooling="mean"):
    encoder = Encoder.load(tiny_bert_dir, pooling=pooling, device="cpu")
    encoder.set_dropout(0.0)
    return encoder.train()


@pytest.mark.parametrize("pooling", ["mean", "cls", "first_last_avg", "max"])
def test_chunked_forward_equals_one_padded_forward_with_gradients(tiny_bert_dir, pooling):
    # float64: a parameter's gradient sums over every token, so float32 rounding alone (summed in another
    # order by the chunks) reaches 5e-5 on the token-type embeddings; the equality itself is exact
    encoder = _tiny(tiny_bert_dir, pooling).double()
    feats = encoder.tokenize(QUERIES + PASSAGES, max_length=64)
    assert feats["input_ids"].shape[1] == 64

    def grads_of(out):
        encoder.zero_grad()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}

    chunks = []
    real = encoder.embed
    encoder.embed = lambda f: chunks.append(f["input_ids"].shape) or real(f)
    chunked = encoder(feats)
    encoder.embed = real
    assert len(chunks) >= 2 and sum(s[0] for s in chunks) == len(QUERIES) + len(PASSAGES)
    assert sum(s[0] * s[1] for s in chunks) < feats["input_ids"].numel() / 2  # far less padding
    g_chunked = grads_of(chunked)
    encoder.chunk_overhead = None
    plain = encoder(feats)
    g_plain = grads_of(plain)
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=0)
    assert g_chunked.keys() == g_plain.keys()
    for name in g_plain:
        torch.testing.assert_close(g_chunked[name], g_plain[name], atol=1e-5, rtol=1e-5, msg=name)


def test_forward_by_length_keeps_input_order_with_extra_columns():
    mask = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0]])
    feats = {"input_ids": torch.tensor([[5, 0, 0], [6, 7, 8], [9, 4, 0]]), "attention_mask": mask,
             "token_type_ids": torch.zeros(3, 3, dtype=torch.long)}
    seen = []

    def embed(f):  # row i's "embedding" is (its first id, its width)
        seen.append(tuple(f["input_ids"].shape))
        assert f.keys() == feats.keys()
        width = torch.full((f["input_ids"].shape[0],), float(f["input_ids"].shape[1]))
        return torch.stack([f["input_ids"][:, 0].float(), width], 1)

    out = forward_by_length(embed, feats, overhead=0)
    assert out[:, 0].tolist() == [5, 6, 9]
    assert out[:, 1].tolist() == [1, 3, 2]  # each row ran at its own width
    assert seen == [(1, 3), (1, 2), (1, 1)]


def _config(model_dir, data, kind, **extra):
    from textcl.config import config_from_dict

    base = {"model": {"name": str(model_dir), "max_seq_len": 64, "dropout": 0.0},
            "data": {"path": str(data), "kind": kind},
            "eval": {"data": [], "test": [], "every": 0, "before": False},
            "train": {"batch_size": 6, "max_steps": 2, "checkpoint_every": 0, "report_to": "none", "plot": False},
            # eps 1e-6: Adam's first steps are ~lr * sign(gradient), which turns float32 rounding of a near-zero
            # gradient (summed in another order by the chunks) into a 1e-5 weight change; a larger eps does not
            "optim": {"lr": 1e-3, "eps": 1e-6}}
    for key, value in extra.items():
        base.setdefault(key, {}).update(value)
    return config_from_dict(base)


@pytest.mark.parametrize("kind, extra", [
    ("pairs", {"loss": {"symmetric": True}}),
    ("triples", {"loss": {"hard_negative_weight": 0.5}}),
    ("pairs", {"model": {"two_tower": True}}),
    ("pairs", {"loss": {"cached": True, "mini_batch_size": 4}}),
    ("triples", {"model": {"two_tower": True}, "loss": {"cached": True, "mini_batch_size": 5}}),
])
def test_training_steps_equal_the_unchunked_computation(tiny_bert_dir, tmp_path, monkeypatch, kind, extra):
    """Short queries against long passages (and hard negatives): chunked training ends with the weights of
    the old one-padded-forward computation, dropout off, within 1e-5."""
    from safetensors.torch import load_file

    from textcl.train import train

    rows = [{"anchor": q, "positive": p, "negative": PASSAGES[(i + 2) % 6][:40]}
            for i, (q, p) in enumerate(zip(QUERIES * 2, PASSAGES[::-1] * 2))]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = _config(tiny_bert_dir, data, kind, **extra)
    train(config, output_dir=tmp_path / "chunked")
    monkeypatch.setattr(Encoder, "chunk_overhead", None)
    train(config, output_dir=tmp_path / "plain")
    a = load_file(str(tmp_path / "chunked" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "plain" / "model" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0, msg=name)


def test_length_grouping_sees_the_whole_row(tiny_bert_dir, tmp_path):
    """Equal-length queries with passages of very different lengths: grouped batches hold passages of
    similar length (grouping by the anchor alone could not tell them apart), in an order fixed by the seed."""
    from textcl.train import Trainer
    from textcl.train.sampler import epoch_batches

    rng = np.random.default_rng(0)
    sizes = rng.permutation(np.repeat([2, 10, 40, 80], 16))
    rows = [{"anchor": f"query {i:03d}", "positive": " ".join(["word"] * int(n))} for i, n in enumerate(sizes)]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    trainer = Trainer(_config(tiny_bert_dir, data, "pairs", train={"batch_size": 16}), tmp_path / "run")
    run = trainer.setup()
    batches = epoch_batches(run.lengths, 16, seed=1, epoch=0)
    assert batches and all(len(set(sizes[b])) == 1 for b in batches)  # each batch: one passage length
    again = epoch_batches(run.lengths, 16, seed=1, epoch=0)
    assert all((a == b).all() for a, b in zip(batches, again))


def test_chunk_cost_probe_recovers_a_known_fixed_and_per_token_cost():
    """An embed that costs 20 ms + 0.1 ms per token: one more chunk is worth 200 tokens."""
    import time

    from textcl.models.chunking import chunk_cost_probe

    w = torch.nn.Parameter(torch.ones(1))

    def embed(feats):
        time.sleep(0.02 + 1e-4 * feats["input_ids"].numel())
        return feats["attention_mask"].float().sum(1, keepdim=True) * w

    values = chunk_cost_probe(embed, [w], 100, torch.device("cpu"), repeats=2)
    assert 170 < values["overhead_tokens"] < 240, values
    assert w.grad is None  # the probe leaves the parameters' gradients alone


def unlabeled_run(model_dir, tmp_path, *, lines: int, **train):
    """A recipe of ``lines`` unlabeled sentences on the tiny BERT, batches of 4, no evaluation."""
    from textcl.config import config_from_dict

    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"sentence number {i} is here\n" for i in range(lines)))
    return config_from_dict({
        "model": {"name": str(model_dir), "max_seq_len": 16}, "data": {"path": str(corpus)},
        "eval": {"data": [], "test": [], "every": 0, "before": False},
        "train": {"batch_size": 4, "report_to": "none", "plot": False, **train}})


def test_the_trainer_uses_the_measured_chunk_cost(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    import json

    from textcl.models import chunking
    from textcl.train import Trainer

    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path / "cache"))  # measured here, not found in the session's cache
    real = chunking.measured_chunk_overhead
    monkeypatch.setattr(chunking, "measured_chunk_overhead", lambda encoder, **kw: real(
        encoder, **kw, probe=lambda: {"fixed_s": 0.007, "per_token_s": 0.001, "overhead_tokens": 7.0}))
    config = unlabeled_run(tiny_bert_dir, tmp_path, lines=16, max_steps=1, checkpoint_every=0)
    trainer = Trainer(config, tmp_path / "run")
    result = trainer.run()
    assert trainer.run_state.encoder.chunk_overhead == 7
    assert "textcl: chunk cost 7 tokens, measured on this CPU" in capsys.readouterr().out
    assert result.metrics["chunk_overhead_tokens"] == 7
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["chunk_overhead_tokens"] == 7


def test_one_process_keeps_one_chunk_cost_and_a_resume_keeps_its_checkpoints(tiny_bert_dir, tmp_path, monkeypatch):
    """A first measurement disturbed by other work (so not cached: the CPU default decides) and a later steady
    one must not give two trainings in one program different chunk plans; and a resumed run, in a new process
    that would measure another cost, cuts its chunks as the run it continues."""
    from textcl.models import calibration, chunking
    from textcl.train import Trainer

    monkeypatch.setenv("TEXTCL_CACHE", str(tmp_path / "cache"))
    shares = iter([0.6, 0.0, 0.0])
    real_share = calibration._others_share
    monkeypatch.setattr(calibration, "_others_share", lambda probe: (real_share(probe)[0], next(shares)))
    costs = iter([7.0, 9.0, 11.0])
    real = chunking.measured_chunk_overhead

    def probe_with(encoder, **kw):
        value = next(costs)
        return real(encoder, **kw, probe=lambda: {"fixed_s": value * 1e-3, "per_token_s": 1e-3,
                                                  "overhead_tokens": value, "fit_r2": 0.99})

    monkeypatch.setattr(chunking, "measured_chunk_overhead", probe_with)
    config = unlabeled_run(tiny_bert_dir, tmp_path, lines=32, max_steps=4, checkpoint_every=2)
    seen = []
    for out in ("a", "b"):
        trainer = Trainer(config, tmp_path / out)
        trainer.run(stop_after_step=2)
        seen.append(trainer.run_state.encoder.chunk_overhead)
    assert seen[0] == seen[1] == chunking.CHUNK_OVERHEAD_TOKENS["cpu"]  # disturbed: the default, both times
    calibration._DECIDED.clear()  # a new process, which would now measure 9 tokens
    resumed = Trainer(config, tmp_path / "a")
    resumed.run(resume=True)
    assert resumed.run_state.encoder.chunk_overhead == seen[0]
