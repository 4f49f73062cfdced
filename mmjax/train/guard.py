"""Stops a run whose steps keep coming out NaN or Inf, after the step skipped each one."""

import logging

from mmjax.train.failures import TrainingDiverged

log = logging.getLogger(__name__)


class NonfiniteGuard:
    """Counts the steps the train step skipped (its "nonfinite" metric) and raises
    TrainingDiverged after `limit` in a row. Each flag is read one step late, once the
    next step is queued, so the host never waits on the device for it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.skipped = self.streak = 0
        self._pending = None

    def add(self, step: int, flag) -> None:
        previous, self._pending = self._pending, (step, flag)
        if previous is not None:
            self._check(*previous)

    def flush(self) -> None:
        if self._pending is not None:
            self._check(*self._pending)
            self._pending = None

    def _check(self, step: int, flag) -> None:
        if not float(flag):
            self.streak = 0
            return
        self.skipped += 1
        self.streak += 1
        log.warning("step %d: the loss, a gradient or a new weight is NaN or Inf; "
                    "the update was skipped (%d in a row, %d in all)", step, self.streak,
                    self.skipped)
        if self.streak >= self.limit:
            raise TrainingDiverged(
                f"steps {step - self.streak + 1}..{step} all had a NaN or Inf loss, gradient "
                f"or new weight (train.max_nonfinite_steps={self.limit}); their updates were "
                "skipped. Lower optim.learning_rate or raise optim.warmup_steps, or look at "
                "the data of those steps, then rerun to resume from the newest checkpoint.")
