"""What happens around the train step, as hooks the loop calls after every step, in
order: the non-finite guard, preemption, metrics, checkpoints, evaluations. Each keeps
its own schedule and can be tested alone with a `Loop` of its own making."""

import dataclasses
import logging
import signal
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from mmjax.train.failures import TrainingDiverged
from mmjax.train.guard import NonfiniteGuard
from mmjax.train.metrics import MetricsLog, Throughput

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Loop:
    """The loop's state as the hooks see it after a step."""

    step: int  # steps done
    end: int  # this invocation stops after this step
    num_steps: int  # the run's last step
    host_state: object  # () -> the train state as one copy
    metrics: dict = dataclasses.field(default_factory=dict)  # this step's, on the device
    throughput: Throughput = dataclasses.field(default_factory=Throughput)
    data_wait: float = 0.0  # seconds spent waiting for input since the last log
    skipped: int = 0  # non-finite steps skipped so far
    streak: int = 0  # ... in a row, up to the step before this one (read a step late)
    diverged: bool = False  # the guard stopped the run
    stop: bool = False  # a hook asks the loop to stop after this step (preemption)
    stopped_by: str = ""  # the signal that stopped it ('SIGTERM', 'SIGINT')
    saved: int | None = None  # the newest step checkpointed (the resumed-from one at first)
    logged: dict = dataclasses.field(default_factory=dict)  # the last logged metrics
    evals: dict | None = None  # the final evaluations' metrics by evaluator

    @property
    def last(self) -> bool:
        """This step ends the invocation: its checkpoint is written whatever the schedule."""
        return self.step == self.end or self.stop


class Hook:
    def after_step(self, loop: Loop) -> None:
        raise NotImplementedError

    def close(self, loop: Loop) -> None:
        """After the last step, also when a step raised: flush what is in flight."""


class GuardHook(Hook):
    """Counts skipped non-finite steps and stops a run whose steps keep diverging."""

    def __init__(self, guard: NonfiniteGuard, to_host):
        self.guard, self.to_host = guard, to_host

    def after_step(self, loop: Loop) -> None:
        self._read(loop, lambda: self.guard.add(loop.step, self.to_host(loop.metrics["nonfinite"])))

    def close(self, loop: Loop) -> None:
        self._read(loop, self.guard.flush)

    def _read(self, loop: Loop, check) -> None:
        try:
            check()
        except TrainingDiverged:
            loop.diverged = True
            raise
        finally:
            loop.skipped, loop.streak = self.guard.skipped, self.guard.streak


class Preemption(Hook):
    """Notes SIGTERM (preemption, scancel) and SIGINT (Ctrl-C) so the loop can checkpoint
    and stop; with several hosts they agree through a collective, so only on steps all of
    them reach together (multiples of `every`). A second Ctrl-C is Python's own again: it
    aborts, even while the checkpoint is being written."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, every: int):
        self.every, self.received, self._previous = every, 0, {}
        try:
            self._previous = {s: signal.signal(s, self._handle) or signal.SIG_DFL
                              for s in self.SIGNALS}  # None: a handler set outside Python
        except ValueError:  # not the main thread: signals cannot be caught here
            self._previous = {}

    def _handle(self, signum, frame):
        self.received = self.received or signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, self._previous[signal.SIGINT])

    def agreed(self) -> int:
        """The signal any host received (0: none), the same on every host so that all
        save together."""
        if jax.process_count() == 1:
            return self.received
        return int(np.max(multihost_utils.process_allgather(np.int32(self.received))))

    def after_step(self, loop: Loop) -> None:
        if loop.stop or (jax.process_count() > 1 and loop.step % self.every):
            return
        if received := self.agreed():
            loop.stop, loop.stopped_by = True, signal.Signals(received).name

    def close(self, loop: Loop) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        if loop.stop:
            log.warning("%s: stopped after step %d, the newest checkpoint is step %s; "
                        "rerun to resume", loop.stopped_by, loop.step, loop.saved)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def log_line(step: int, num_steps: int, metrics: dict, step_time: float) -> str:
    """One console line for a logged step: what the progress bar shows, and more, where
    there is no bar (--no-progress, no terminal: cluster logs)."""
    terms = ", ".join(f"{k.removeprefix('loss/')} {v:.3f}" for k, v in metrics.items()
                      if k.startswith("loss/"))
    line = f"step {step}/{num_steps}: loss {metrics['loss']:.4f}"
    line += f" ({terms})" if terms else ""
    line += (f", lr {metrics['learning_rate']:.3g}, {metrics['examples_per_sec']:.0f} ex/s, "
             f"data wait {metrics['data_wait_fraction']:.1%}")
    if "mfu" in metrics:
        line += f", MFU {metrics['mfu']:.1%}"
    if metrics.get("skipped_steps"):
        line += f", {metrics['skipped_steps']} non-finite steps skipped"
    return line + f", ETA {_duration((num_steps - step) * step_time)}"


class MetricsHook(Hook):
    """Every `every` steps and at the last: the step's metrics with throughput, input
    wait and MFU, to metrics.jsonl (host 0) and the progress bar, or as a log line
    (`lines`) where there is no bar."""

    def __init__(self, every: int, metrics_log: MetricsLog | None, to_host, bar=None,
                 step_flops: float | None = None, peak_flops: float | None = None,
                 lines: bool = False):
        self.every, self.metrics_log, self.to_host, self.bar = every, metrics_log, to_host, bar
        self.step_flops, self.peak_flops, self.lines = step_flops, peak_flops, lines

    def after_step(self, loop: Loop) -> None:
        if loop.step % self.every and loop.step != loop.num_steps:
            return
        metrics = as_float32(self.to_host(loop.metrics))
        metrics["skipped_steps"] = loop.skipped
        elapsed = loop.throughput.elapsed()
        metrics["examples_per_sec"], step_time = loop.throughput.measure()
        metrics["data_wait_fraction"] = min(loop.data_wait / elapsed, 1.0)
        if self.step_flops and self.peak_flops:
            metrics["mfu"] = self.step_flops / step_time / self.peak_flops
        loop.data_wait, loop.logged = 0.0, metrics
        if self.metrics_log is not None:
            self.metrics_log.write(loop.step, metrics)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics['loss']:.3f}",
                                 ex_per_s=f"{metrics['examples_per_sec']:.0f}")
        if self.lines:
            log.info("%s", log_line(loop.step, loop.num_steps, metrics, step_time))


class CheckpointHook(Hook):
    """Saves on the checkpointer's schedule and at the last step, but never a step in a
    non-finite streak (its weights may be the ones that led there); metrics.jsonl is
    flushed after each save, so a resume relogs only later rows."""

    def __init__(self, checkpointer, metrics_log: MetricsLog | None, to_host):
        self.checkpointer, self.metrics_log, self.to_host = checkpointer, metrics_log, to_host

    def after_step(self, loop: Loop) -> None:
        if not self.checkpointer.due(loop.step, final=loop.last):
            return
        if loop.streak or float(self.to_host(loop.metrics["nonfinite"])):
            log.warning("step %d: not saved, its update or an earlier one was skipped as "
                        "NaN/Inf; the newest checkpoint is step %s", loop.step,
                        self.checkpointer.latest_step())
            return
        if not self.checkpointer.maybe_save(loop.host_state(), loop.step, final=loop.last):
            return
        loop.saved = loop.step
        if self.metrics_log is not None:
            self.metrics_log.flush()

    def close(self, loop: Loop) -> None:
        # Even when a step failed: the write in flight. The resumed-from step stays
        # protected unless the invocation got to its end without diverging.
        self.checkpointer.close(release=loop.last and not loop.diverged)


class EvalHook(Hook):
    """Each evaluator on its own schedule (`every`), and all of them after the run's last
    step; their scalars go to metrics.jsonl as 'eval/<name>/...' rows."""

    def __init__(self, runs, evaluate, metrics_log: MetricsLog | None):
        self.runs, self.evaluate, self.metrics_log = runs, evaluate, metrics_log

    def after_step(self, loop: Loop) -> None:
        final = loop.step == loop.num_steps
        due = [r for r in self.runs if r.due(loop.step, final)]
        if not due:
            return
        start = time.perf_counter()
        results, scalars = self.evaluate(due, loop.step)
        log.info("evals at step %d: %.1f s", loop.step, time.perf_counter() - start)
        if self.metrics_log is not None:
            self.metrics_log.write(loop.step, scalars)
        if final:
            loop.evals = results
        loop.throughput.reset()  # examples/s should not count the evals


class LockRefresh(Hook):
    """Keeps the workdir lock fresh, so another host sees the run is alive."""

    def __init__(self, lock):
        self.lock = lock

    def after_step(self, loop: Loop) -> None:
        self.lock.refresh()


class ProgressHook(Hook):
    def __init__(self, bar):
        self.bar = bar

    def after_step(self, loop: Loop) -> None:
        self.bar.update(1)

    def close(self, loop: Loop) -> None:
        self.bar.close()


def as_float32(tree):
    """Host copies of metrics as Python floats, for logging."""
    return {k: float(np.asarray(v, np.float32)) for k, v in jax.device_get(tree).items()}
