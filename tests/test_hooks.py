"""The training loop's hooks, each alone with a Loop made by hand: their schedules, what
they write, and that the loop closes every one of them however it ends."""

import dataclasses
import os
import signal
import time

import numpy as np
import pytest

from mmjax.train import hooks as hooks_lib
from mmjax.train.failures import TrainingDiverged
from mmjax.train.guard import NonfiniteGuard
from mmjax.train.loop import _steps


class FakeLog:
    def __init__(self):
        self.rows, self.flushes = [], 0

    def write(self, step, metrics):
        self.rows.append((step, dict(metrics)))

    def flush(self):
        self.flushes += 1


def _loop(step=0, end=10, num_steps=10, **kwargs):
    return hooks_lib.Loop(step, end, num_steps, lambda: "state", **kwargs)


def _after(hook, loop, step, **metrics):
    loop.step = step
    loop.metrics = {"loss": np.float32(1.5), "nonfinite": np.float32(0.0), **metrics}
    loop.throughput.add(4)
    hook.after_step(loop)


def test_metrics_are_logged_on_their_schedule_and_at_the_last_step():
    log = FakeLog()
    hook = hooks_lib.MetricsHook(4, log, to_host=lambda x: x, step_flops=2e9, peak_flops=1e12)
    loop = _loop(num_steps=10)
    for step in range(1, 11):
        loop.data_wait += 0.0
        _after(hook, loop, step)
    assert [step for step, _ in log.rows] == [4, 8, 10]
    row = log.rows[0][1]
    assert row["loss"] == 1.5 and row["skipped_steps"] == 0
    assert row["examples_per_sec"] > 0 and 0 <= row["data_wait_fraction"] <= 1
    assert row["mfu"] > 0
    assert loop.logged == log.rows[-1][1]


def test_without_a_bar_each_logged_step_is_a_console_line(caplog):
    """--no-progress and cluster logs: step, every loss term, lr, throughput, input wait,
    MFU and the ETA, on the metrics' schedule; with a bar, no lines."""
    metrics = {"loss/caption": np.float32(0.25), "loss/contrastive/image-report": np.float32(2.0),
               "learning_rate": np.float32(3e-4)}
    for lines in (True, False):
        hook = hooks_lib.MetricsHook(4, FakeLog(), to_host=lambda x: x, step_flops=2e9,
                                     peak_flops=1e12, lines=lines)
        loop = _loop(num_steps=10)
        caplog.clear()
        with caplog.at_level("INFO", logger="mmjax.train.hooks"):
            for step in range(1, 11):
                _after(hook, loop, step, **metrics)
        logged = [r.getMessage() for r in caplog.records]
        if not lines:
            assert logged == []
            continue
        assert [line.split(":")[0] for line in logged] == ["step 4/10", "step 8/10",
                                                           "step 10/10"]
        first = logged[0]
        for part in ("loss 1.5000 (caption 0.250, contrastive/image-report 2.000)",
                     "lr 0.0003", "ex/s", "data wait ", "MFU ", "ETA 0m00s"):
            assert part in first, (part, first)


def test_durations_read_as_minutes_or_hours():
    assert hooks_lib._duration(59.6) == "1m00s"
    assert hooks_lib._duration(3 * 3600 + 61) == "3h01m"


@dataclasses.dataclass
class FakeCheckpointer:
    every: int
    saves: list = dataclasses.field(default_factory=list)
    released: bool | None = None

    def due(self, step, final=False):
        return final or step % self.every == 0

    def latest_step(self):
        return self.saves[-1][0] if self.saves else None

    def maybe_save(self, state, step, final=False):
        due = self.due(step, final)
        if due:
            self.saves.append((step, final))
        return due

    def close(self, release=False):
        self.released = release


def test_checkpoints_follow_the_schedule_and_the_last_step_is_always_saved():
    checkpointer, log = FakeCheckpointer(every=4), FakeLog()
    hook = hooks_lib.CheckpointHook(checkpointer, log, lambda x: x)
    loop = _loop(end=6, num_steps=10)  # --stop-at 6
    for step in range(1, 7):
        _after(hook, loop, step)
    assert checkpointer.saves == [(4, False), (6, True)]
    assert log.flushes == 2  # metrics.jsonl is flushed after each save
    loop = _loop(end=10)
    loop.stop = True  # preemption: the step it stops at is saved whatever the schedule
    _after(hook, loop, 3)
    assert checkpointer.saves[-1] == (3, True)
    hook.close(loop)
    assert checkpointer.released  # it got to its end: the resumed-from step may go


def test_no_checkpoint_is_written_during_a_nonfinite_streak():
    """Neither the step whose update was skipped nor a later one while the streak the
    guard read lasts; a diverged run keeps the step it resumed from."""
    checkpointer, log = FakeCheckpointer(every=2), FakeLog()
    hook = hooks_lib.CheckpointHook(checkpointer, log, lambda x: x)
    loop = _loop(end=10)
    _after(hook, loop, 2, nonfinite=np.float32(1.0))  # this step was skipped
    loop.streak = 1  # the guard read step 2's flag; step 4's own flag is clean
    _after(hook, loop, 4)
    loop.streak = 0
    _after(hook, loop, 6)
    assert checkpointer.saves == [(6, False)]
    loop.diverged = True
    hook.close(loop)
    assert checkpointer.released is False


@dataclasses.dataclass(frozen=True)
class FakeRun:
    name: str
    every: int

    def due(self, step, final=False):
        return final or (self.every > 0 and step % self.every == 0)


def test_each_evaluator_runs_on_its_own_schedule_and_all_after_the_last_step():
    calls, log = [], FakeLog()

    def evaluate(runs, step):
        calls.append((step, [r.name for r in runs]))
        return {r.name: {"score": step} for r in runs}, {f"eval/{r.name}/score": step
                                                        for r in runs}

    hook = hooks_lib.EvalHook([FakeRun("retrieval", 3), FakeRun("probe", 0),
                               FakeRun("retrieval@train", 2)], evaluate, log)
    loop = _loop(num_steps=7)
    for step in range(1, 8):
        _after(hook, loop, step)
        if step < 7:
            assert loop.evals is None  # only the last step's evals are the run's result
    assert calls == [(2, ["retrieval@train"]), (3, ["retrieval"]), (4, ["retrieval@train"]),
                     (6, ["retrieval", "retrieval@train"]),
                     (7, ["retrieval", "probe", "retrieval@train"])]
    assert loop.evals == {"retrieval": {"score": 7}, "probe": {"score": 7},
                          "retrieval@train": {"score": 7}}
    assert [step for step, _ in log.rows] == [2, 3, 4, 6, 7]


def test_the_guard_counts_skipped_steps_and_stops_a_diverging_run():
    hook = hooks_lib.GuardHook(NonfiniteGuard(limit=3), to_host=lambda x: x)
    loop = _loop()
    flags = [0, 1, 0, 1, 1]  # read one step late: the count lags by a step
    for step, flag in enumerate(flags, 1):
        _after(hook, loop, step, nonfinite=np.float32(flag))
    hook.close(loop)
    assert hook.guard.skipped == 3 and hook.guard.streak == 2
    with pytest.raises(TrainingDiverged, match="steps 4..6"):
        for step in range(6, 9):
            _after(hook, loop, step, nonfinite=np.float32(1))
        hook.close(loop)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_ask_the_loop_to_stop_and_the_handlers_are_restored(signum):
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    hook = hooks_lib.Preemption(every=5)
    loop = _loop()
    _after(hook, loop, 1)
    assert not loop.stop
    os.kill(os.getpid(), signum)
    _after(hook, loop, 2)
    assert loop.stop and loop.last and loop.stopped_by == signal.Signals(signum).name
    hook.close(loop)
    assert {s: signal.getsignal(s) for s in previous} == previous


def test_a_second_ctrl_c_aborts_while_the_first_is_being_handled():
    hook = hooks_lib.Preemption(every=5)
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs at the next bytecode; this is only a bound
    hook.close(_loop())


def test_a_checkpoint_hook_records_the_step_it_saved():
    checkpointer = FakeCheckpointer(every=2)
    hook = hooks_lib.CheckpointHook(checkpointer, None, lambda x: x)
    loop = _loop(end=10, saved=1)
    _after(hook, loop, 3)
    assert loop.saved == 1
    _after(hook, loop, 4)
    assert loop.saved == 4


class Recorder(hooks_lib.Hook):
    def __init__(self, events, name, fail_at=None):
        self.events, self.name, self.fail_at = events, name, fail_at

    def after_step(self, loop):
        self.events.append((self.name, loop.step))
        if loop.step == self.fail_at:
            raise RuntimeError("a hook failed")

    def close(self, loop):
        self.events.append((self.name, "closed"))


class FakeStrategyRun:
    state = 0

    @staticmethod
    def to_device(batch):
        return batch


def test_the_loop_calls_hooks_in_order_and_closes_them_all_when_one_fails():
    events = []
    hooks = [Recorder(events, "first"), Recorder(events, "second", fail_at=2)]
    loop = _loop(end=5)
    step = lambda state, batch: (state + 1, {"nonfinite": 0.0})  # noqa: E731
    with pytest.raises(RuntimeError, match="a hook failed"):
        _steps(loop, hooks, FakeStrategyRun(), step, iter(range(100)), batch_size=4)
    assert events == [("first", 1), ("second", 1), ("first", 2), ("second", 2),
                      ("first", "closed"), ("second", "closed")]
    events.clear()
    loop = _loop(end=3)
    _steps(loop, [Recorder(events, "only")], FakeStrategyRun(), step, iter(range(100)), 4)
    assert loop.step == 3 and events[-1] == ("only", "closed")
