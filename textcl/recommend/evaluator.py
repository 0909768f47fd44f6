"""A training run's view of a recommendation stage: an evaluator the trainer calls like any other."""
from __future__ import annotations


class RankingEvaluator:
    """``evaluator(encoder, n_bootstrap=0) -> {"NAME-STAGE": metrics}`` for one stage of an
    :class:`~textcl.recommend.task.InteractionTask` (every catalogue item ranked for every user of the stage)."""

    takes_bootstrap = True

    def __init__(self, task, stage: str, batch_size: int = 64):
        self.task, self.stage, self.batch_size = task, stage, batch_size
        self.name = task.sets[stage].name

    def __call__(self, encoder, n_bootstrap: int = 0) -> dict:
        return {self.name: self.task.evaluate(encoder, self.stage, n_bootstrap=n_bootstrap,
                                              batch_size=self.batch_size)}
