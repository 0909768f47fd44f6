"""The weight average (optim.ema_decay): the update rule by hand, the swap, and what a run saves."""
import pytest
import torch
from safetensors.torch import load_file

from textcl.train import train
from textcl.train.ema import WeightAverage
from test_train import corpus, make_config  # noqa: F401  (fixture)


def test_update_rule_by_hand():
    w = torch.nn.Parameter(torch.tensor([0.0, 4.0]))
    avg = WeightAverage([w], decay=0.5)
    with torch.no_grad():
        w.copy_(torch.tensor([1.0, 2.0]))
    avg.update()  # d_1 = min(0.5, 2/11) = 2/11
    torch.testing.assert_close(avg.shadow[0], torch.tensor([9 / 11, 4 * 2 / 11 + 2 * 9 / 11]), rtol=0, atol=1e-6)
    with torch.no_grad():
        w.copy_(torch.tensor([3.0, 3.0]))
    avg.update()  # d_2 = min(0.5, 3/12) = 0.25
    expected = torch.tensor([0.25 * 9 / 11 + 0.75 * 3, 0.25 * (8 / 11 + 18 / 11) + 0.75 * 3])
    torch.testing.assert_close(avg.shadow[0], expected, rtol=0, atol=1e-6)
    # later updates keep the configured decay: d_t = 0.5 once (1 + t) / (10 + t) > 0.5, i.e. from t = 9
    assert avg.rate(8) == pytest.approx(9 / 18) and avg.rate(9) == 0.5 and avg.rate(100) == 0.5


def test_applied_swaps_in_the_average_and_restores_the_raw_weights():
    w = torch.nn.Parameter(torch.tensor([2.0]))
    avg = WeightAverage([w], decay=0.9)
    with torch.no_grad():
        w.fill_(5.0)
    with pytest.raises(RuntimeError, match="inside"):
        with avg.applied():
            assert w.item() == 2.0  # the average: no update yet, so the starting weights
            raise RuntimeError("inside")
    assert w.item() == 5.0


def test_bad_decay_and_mismatched_checkpoint_are_refused():
    w = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=r"decay: expected a value in \(0, 1\), got 1.0"):
        WeightAverage([w], decay=1.0)
    other = WeightAverage([torch.nn.Parameter(torch.zeros(4))], decay=0.5)
    with pytest.raises(ValueError, match="does not match this model's parameters"):
        WeightAverage([w], decay=0.5).load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="written with optim.ema_decay 0.5, this run has 0.9"):
        WeightAverage([w], decay=0.9).load_state_dict(WeightAverage([w], decay=0.5).state_dict())


def test_run_saves_the_average_of_its_steps(tiny_bert_dir, corpus, tmp_path):  # noqa: F811
    """Two steps at a constant learning rate: the saved model is 0.25 * (2/11 w0 + 9/11 w1) + 0.75 w2, where
    w1 and w2 are what runs of one and two steps without the average save."""
    common = {"optim": {"lr": 1e-3, "scheduler": "constant"}}
    w = {}
    for steps in (1, 2):
        config = make_config(tiny_bert_dir, corpus, train={"max_steps": steps, "checkpoint_every": 0}, **common)
        w[steps] = load_file(str(train(config, output_dir=tmp_path / f"raw{steps}").model_dir / "model.safetensors"))
    config = make_config(tiny_bert_dir, corpus, train={"max_steps": 2, "checkpoint_every": 0},
                         optim={"lr": 1e-3, "scheduler": "constant", "ema_decay": 0.5})
    averaged = load_file(str(train(config, output_dir=tmp_path / "ema").model_dir / "model.safetensors"))
    w0 = load_file(str(tiny_bert_dir / "model.safetensors"))
    moved = 0
    for key, value in averaged.items():
        start = w0.get(key, w0.get(f"bert.{key}", w0.get(key.removeprefix("bert."))))
        expected = 0.25 * (2 / 11 * start.float() + 9 / 11 * w[1][key].float()) + 0.75 * w[2][key].float()
        torch.testing.assert_close(value.float(), expected, rtol=0, atol=1e-6)
        moved += int(not torch.equal(w[2][key], value))
    assert moved > 0  # the average differs from the last step's weights
