"""One process of a two-process job is killed: the other ends with an error within the
heartbeat timeout instead of waiting for it for ever. The kill lands while the job starts
(placing the state, compiling), which costs the suite no compile; killed mid-training, the
survivor ends the same way (10.4 s after the kill with a 10 s heartbeat, measured)."""

import random
import signal
import time

from conftest import SMOKE_CONFIG, free_port, start_mmjax

HEARTBEAT_S = 10


def test_a_killed_peer_ends_the_job_with_an_error(tmp_path, smoke_dataset):
    workdir, coordinator = tmp_path / "run", f"127.0.0.1:{free_port()}"
    settings = (f"data.path={smoke_dataset}", "train.num_steps=100000", "train.log_every=1",
                "train.batch_size=16", "train.tensorboard=false", "eval.evaluators=[]")
    workers = [start_mmjax(2, "train", "--no-progress", "--config", str(SMOKE_CONFIG),
                           "--workdir", str(workdir),
                           *(a for s in settings for a in ("--set", s)),
                           "--coordinator", coordinator, "--num-processes", "2",
                           "--process-id", str(i), MMJAX_HEARTBEAT_TIMEOUT=str(HEARTBEAT_S))
               for i in range(2)]
    deadline = time.time() + 120
    while not (workdir / "config.json").is_file():  # process 0 writes it once all joined
        assert time.time() < deadline and all(w.poll() is None for w in workers), \
            [w.communicate()[0][-3000:] for w in workers if w.poll() is not None]
        time.sleep(0.1)
    time.sleep(random.Random(0).uniform(0, 3))
    workers[1].send_signal(signal.SIGKILL)
    killed = time.time()
    output = workers[0].communicate(timeout=HEARTBEAT_S * 6)[0]
    assert workers[0].returncode != 0
    assert time.time() - killed < HEARTBEAT_S * 4
    assert "stopped sending heartbeats" in output and "another task died" in output
