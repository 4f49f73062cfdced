"""Orbax checkpoints of the train state; the newest complete one is resumed from."""

import dataclasses
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mmjax import storage
from mmjax.config import ConfigError
from mmjax.train.failures import CheckpointWriteError
from mmjax.train.state import TrainState

log = logging.getLogger(__name__)

DIGEST_KEY = "mmjax_digest"  # in each step's orbax metadata: digest() of what was saved


class CheckpointMismatch(ConfigError):
    """A checkpoint whose keys or shapes differ from the model its config describes."""


def _key_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                    for k in path)


def first_mismatch(saved: dict, expected: dict) -> str | None:
    """The first key, field by field in the expected order, that one tree has and the
    other lacks or that has another shape in each; None when the trees fit."""
    def leaves(tree):
        return {_key_name(path): leaf.shape
                for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
    for name in [*expected, *(k for k in saved if k not in expected)]:
        if name not in saved:
            return f"{name} is not in the checkpoint"
        if name not in expected:
            return f"{name} is in the checkpoint but not in the model"
        have, want = leaves(saved[name]), leaves(expected[name])
        for key in [*want, *(k for k in have if k not in want)]:
            where = "/".join(filter(None, (name, key)))
            if key not in have:
                return f"{where} is not in the checkpoint"
            if key not in want:
                return f"{where} is in the checkpoint but not in the model"
            if tuple(have[key]) != tuple(want[key]):
                return f"{where} has shape {tuple(have[key])} in the checkpoint, " \
                       f"{tuple(want[key])} in the model"
    return None


class CheckpointCorrupt(ConfigError):
    """No checkpoint in a directory could be read with intact, finite weights."""


class DigestMismatch(CheckpointCorrupt):
    """A checkpoint whose arrays read, but not with the values that were saved."""


def _bits(x: jax.Array) -> jax.Array:
    """The array's bit patterns as uint32 (narrower types widened, 64-bit ones folded)."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    unsigned = jnp.dtype(f"uint{x.dtype.itemsize * 8}")
    bits = jax.lax.bitcast_convert_type(x, unsigned)
    if unsigned.itemsize == 8:
        return (bits ^ (bits >> 32)).astype(jnp.uint32)
    return bits.astype(jnp.uint32)


@jax.jit
def _leaf_digests(leaves: list) -> list:
    """Two wrapping uint32 sums per array: of its bits, and of its bits times their
    position. Exact and independent of the reduction order (addition mod 2**32), so the
    same on any mesh; one changed value, or two swapped ones, changes them."""
    def one(x):
        bits = _bits(x).ravel()
        position = jnp.arange(1, bits.size + 1, dtype=jnp.uint32)
        return jnp.stack([jnp.sum(bits, dtype=jnp.uint32),
                          jnp.sum(bits * position, dtype=jnp.uint32)])
    return [one(x) for x in leaves]


def digest(tree) -> dict[str, list[int]]:
    """{key path: [sum, positional sum]} of every array in `tree`, as saved beside it."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    sums = _leaf_digests([leaf for _, leaf in flat])
    return {_key_name(path): [int(v) for v in np.asarray(s)]
            for (path, _), s in zip(flat, sums, strict=True)}


def verify(tree, saved: dict | None, where: str) -> None:
    """Raises DigestMismatch naming the first array of `tree` whose digest differs from
    the one saved with it; checkpoints written before digests existed pass."""
    if not saved:
        return
    for name, sums in digest(tree).items():
        if name in saved and saved[name] != sums:
            raise DigestMismatch(f"{where}: {name} does not hold the values that were saved "
                                 "(digest mismatch: the files were changed after writing)")


@dataclasses.dataclass
class ProtectedStep(ocp.checkpoint_managers.PreservationPolicy):
    """Keeps one step, when set, whatever the other policies say."""

    step: int | None = None

    def should_preserve(self, checkpoints, *, context):
        return [info.step == self.step for info in checkpoints]


class Checkpointer:
    """Async saves every `every` steps and at the end, keeping the last `keep` and,
    when `keep_every` > 0, every step that is a multiple of it.

    Orbax writes to a temporary folder and renames it when complete, so the newest
    *listed* step is always a whole checkpoint, even after a kill mid-write. The step a
    run resumed from (`protect`) is kept until the run ends without diverging, so a
    resume with a bad setting can never rotate out the checkpoint it started from.
    """

    def __init__(self, directory: str | Path, every: int, keep: int, keep_every: int = 0):
        self.every, self.keep, self.keep_every = every, keep, keep_every
        self.directory = storage.absolute(directory)
        self.protected = ProtectedStep()
        policies = [ocp.checkpoint_managers.LatestN(keep), self.protected]
        if keep_every:
            policies.append(ocp.checkpoint_managers.EveryNSteps(keep_every))
        self.manager = ocp.CheckpointManager(
            self.directory, item_handlers=ocp.StandardCheckpointHandler(),
            options=ocp.CheckpointManagerOptions(
                create=True, preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
                    policies)),
        )

    def protect(self, step: int | None) -> None:
        """Keeps `step` (the one resumed from) until close(release=True)."""
        self.protected.step = step

    def due(self, step: int, final: bool = False) -> bool:
        """Whether maybe_save would write this step."""
        return (final or step % self.every == 0) and step != self.latest_step()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, like: TrainState, step: int | None = None) -> TrainState:
        """Restores onto the shapes, dtypes and shardings of `like`, by default the newest
        intact step: one that fails to read (truncated, corrupt) or holds NaN/Inf weights
        is passed over with a message for the one before it. A checkpoint that does not
        fit `like` is a CheckpointMismatch naming the first key that differs."""
        if step is not None:
            return self._restore(like, step)
        return newest_intact(sorted(self.manager.all_steps()), self.directory,
                             lambda s: self._restore(like, s), lambda state: state.params)

    def _restore(self, like: TrainState, step: int) -> TrainState:
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like
        )
        saved = self.manager.item_metadata(step).tree
        fields = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(abstract)}
        if "batch_stats" not in saved and not like.batch_stats:
            del fields["batch_stats"]  # written before the state had BatchNorm statistics
        if problem := first_mismatch(saved, fields):
            raise CheckpointMismatch(f"checkpoint step {step} in {self.directory} does not "
                                     f"fit the model: {problem}")
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(fields))
        verify(restored, _saved_digest(self.manager, step), f"checkpoint step {step}")
        return TrainState(**{"batch_stats": {}, **restored})

    def maybe_save(self, state: TrainState, step: int, final: bool = False) -> bool:
        """Saves on the schedule, or when `final`; a step is never written twice. A failed
        write (this one, or the previous one finishing in the background) is a
        CheckpointWriteError; the newest complete checkpoint stays as it was."""
        if not self.due(step, final):
            return False
        try:
            saved = self.manager.save(step, args=ocp.args.StandardSave(state), force=True,
                                      custom_metadata={DIGEST_KEY: digest(state)})
        except Exception as e:  # noqa: BLE001 - every failure of a write is reported alike
            raise self._write_error(e) from e
        return saved

    def close(self, release: bool = False) -> None:
        """Finishes the write in flight; with `release` (the run ended without diverging)
        the protected step goes the way the keep policy says."""
        try:
            self.manager.wait_until_finished()
            if release and self.protected.step is not None:
                self._release()
        except Exception as e:  # noqa: BLE001
            raise self._write_error(e) from e
        finally:
            self.manager.close()

    def _release(self) -> None:
        step, steps = self.protected.step, sorted(self.manager.all_steps())
        self.protected.step = None
        kept = step in steps[-self.keep:] or (self.keep_every and step % self.keep_every == 0)
        if step in steps and not kept:
            self.manager.delete(step)

    def intact(self) -> str:
        """Which complete checkpoints there are, for a run that stops on divergence."""
        steps = sorted(ocp.utils.checkpoint_steps(self.directory))
        if not steps:
            return "No checkpoint was written."
        resumed = self.protected.step
        kept = (f" Step {resumed}, which this run resumed from, is kept."
                if resumed is not None and resumed in steps else "")
        return (f"Checkpoints written before the NaN/Inf steps: {', '.join(map(str, steps))}; "
                f"none was written during them.{kept}")

    def _write_error(self, cause: Exception) -> CheckpointWriteError:
        complete = ocp.utils.checkpoint_steps(self.directory)
        newest = f"step {max(complete)}" if complete else "none"
        return CheckpointWriteError(
            f"writing a checkpoint to {self.directory} failed: {cause!r}. The newest complete "
            f"checkpoint ({newest}) is intact; fix the cause (e.g. free disk space) and rerun "
            "to resume from it.")


def _saved_digest(manager, step: int) -> dict | None:
    return (manager.metadata(step).custom_metadata or {}).get(DIGEST_KEY)


def finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(leaf).dtype, np.floating))


def newest_intact(steps: list[int], directory, read, weights):
    """read(step) of the newest step that reads and whose weights(result) are finite; the
    steps passed over are logged with why."""
    problems = []
    for step in reversed(steps):
        try:
            result = read(step)
        except CheckpointMismatch:
            raise
        except DigestMismatch as e:
            problems.append(str(e))
        except Exception as e:  # noqa: BLE001 - any failure to read is a damaged step
            problems.append(f"step {step} does not read ({type(e).__name__})")
        else:
            if finite(weights(result)):
                if problems:
                    log.warning("%s: %s; using step %d", directory, "; ".join(problems), step)
                return result
            problems.append(f"step {step} holds NaN or Inf weights")
    raise CheckpointCorrupt(f"no intact checkpoint in {directory}: "
                            f"{'; '.join(problems) or 'it has none'}")


def read_fields(directory: str | Path, fields: tuple[str, ...], step: int | None = None
                ) -> tuple[dict, int]:
    """({field: host arrays}, step) of the saved TrainState fields named (e.g. 'params',
    'batch_stats'), from checkpoint `step` (default the newest); fields the checkpoint lacks
    are left out. Each process reads whole arrays onto its first local device, whatever
    mesh wrote them, and the optimizer state is never read: what evaluation, export and
    init.from need, on any number of processes."""
    directory = storage.absolute(directory)
    with ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler()) as manager:
        steps = sorted(manager.all_steps())
        if step is None:
            return newest_intact(steps, directory, lambda s: _read(manager, fields, s),
                                 lambda result: result[0])
        if step not in steps:
            raise FileNotFoundError(f"no checkpoint of step {step} in {directory}; it has "
                                    f"{steps or 'none'}")
        fields_read, step = _read(manager, fields, step)
        if not finite(fields_read):
            raise CheckpointCorrupt(f"checkpoint step {step} in {directory} holds NaN or "
                                    "Inf weights")
        return fields_read, step


def _read(manager, fields, step: int) -> tuple[dict, int]:
    saved = manager.item_metadata(step).tree
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {name: jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local), saved[name])
        for name in fields if name in saved}
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))
    verify(restored, _saved_digest(manager, step), f"checkpoint step {step} in {manager.directory}")
    return jax.tree.map(np.asarray, restored), step


def write_params(directory: str | Path, params: dict, step: int = 0) -> None:
    """A checkpoint of parameters alone (an imported model's), with its digest, in the
    layout `read_fields` reads: evaluation, export and init.from take it; training does
    not resume from it (it has no optimizer state)."""
    item = {"params": params, "step": np.asarray(step, np.int32)}
    with ocp.CheckpointManager(storage.absolute(directory),
                               item_handlers=ocp.StandardCheckpointHandler(),
                               options=ocp.CheckpointManagerOptions(create=True)) as manager:
        manager.save(step, args=ocp.args.StandardSave(item),
                     custom_metadata={DIGEST_KEY: digest(item)})
        manager.wait_until_finished()


def holds_steps(directory) -> bool:
    """Whether `directory` holds a saved step (orbax names each `<step>`; an interrupted
    first save leaves only a tmp folder, which is not one)."""
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def place(tree, shardings):
    """Host arrays, the same on every process, as global arrays laid out by `shardings`
    (a tree or a prefix of it); each process supplies only its own devices' pieces."""
    def put(sharding, subtree):
        def one(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
        return jax.tree.map(one, subtree)
    return jax.tree.map(put, shardings, tree,
                        is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
