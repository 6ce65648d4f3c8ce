"""`mrlkit add --ray` on a real two-node Ray cluster on this machine (a head node and a
second node, both on 127.0.0.1, started and stopped here): the same documents and vectors
as the single-process path, and a killed driver whose re-run ends with every document
once."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mrlkit.stores import open_store
from tests.conftest import dataset

pytest.importorskip("ray")
# one worker runs this module, so one cluster: each cluster's start stops every Ray
# process of the machine (`ray stop --force`), a cluster of another worker included
pytestmark = pytest.mark.xdist_group("ray")
RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
# Ray's head enables token authentication; its other nodes and drivers must say so and
# share the token (given here, so that nothing depends on ~/.ray of the machine)
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
       "RAY_AUTH_TOKEN": secrets.token_hex(16),
       # a busy 2-core machine (CI runs other tests beside these) can starve Ray's
       # processes for seconds: health checks and reconnects wait generously instead of
       # declaring a node or the GCS dead
       "RAY_health_check_period_ms": "5000", "RAY_health_check_timeout_ms": "30000",
       "RAY_health_check_failure_threshold": "20",
       "RAY_gcs_rpc_server_reconnect_timeout_s": "300",
       # a driver waits up to 120 s (one try a second) for the GCS to answer, not 20: on
       # CI a driver once gave up on a GCS that `ray status` had just reached
       "RAY_NUM_REDIS_GET_RETRIES": "120"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(*args: str) -> str:
    """`ray start ...`; what ray printed when it failed (a bare exit status hid why a
    second node once failed to start), "" when it started."""
    try:
        got = subprocess.run([RAY, "start", *args], capture_output=True, text=True,
                             env=ENV, timeout=300)
    except subprocess.TimeoutExpired as exc:
        return f"ray start {' '.join(args)} did not end in 300 s:\n{exc.stderr!r:.3000}"
    if got.returncode == 0:
        return ""
    return (f"ray start {' '.join(args)} exited {got.returncode}:\n"
            f"{got.stdout[-2000:]}\n{got.stderr[-3000:]}")


class Cluster:
    """A real two-node Ray cluster on 127.0.0.1, started again when it died (a loaded
    machine has killed Ray's GCS once): the tests are about mrlkit's job, not Ray's
    uptime, so a dead cluster is restarted and the step retried, never skipped."""

    def __init__(self) -> None:
        self.address = ""
        self.start()

    def start(self) -> None:
        """Up to three tries: a node's raylet has 30 s (fixed inside Ray) to register
        with the GCS, and on CI, beside another test worker, a second node once missed
        it ("The current node timed out during startup")."""
        failures = []
        for _ in range(3):
            subprocess.run([RAY, "stop", "--force"], capture_output=True, env=ENV,
                           timeout=180)
            port = _port()
            common = ["--num-cpus", "1", "--disable-usage-stats"]
            failed = (_ray_start("--head", "--port", str(port), "--node-ip-address",
                                 "127.0.0.1", "--include-dashboard", "false", *common)
                      or _ray_start("--address", f"127.0.0.1:{port}", "--node-ip-address",
                                    "127.0.0.1", *common))
            if not failed:
                self.address = f"127.0.0.1:{port}"
                return
            failures.append(failed)
        pytest.fail("a two-node Ray cluster did not start in three tries:\n"
                    + "\n---\n".join(failures))

    def alive(self) -> bool:
        r = subprocess.run([RAY, "status", "--address", self.address], capture_output=True,
                           env=ENV, timeout=300)
        return r.returncode == 0

    def ensure(self) -> str:
        if not self.alive():
            self.start()
        return self.address

    def stop(self) -> None:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=ENV, timeout=180)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        yield c
    finally:
        c.stop()


def _on_ray(cluster: Cluster, *args: str):
    """`mrlkit add ... --ray ADDRESS`; once more on a restarted cluster if the cluster
    itself died under it (the job resumes: stored documents are skipped)."""
    got = _mrlkit(*args, "--ray", cluster.ensure())
    if got.returncode != 0 and not cluster.alive():
        got = _mrlkit(*args, "--ray", cluster.ensure())
    return got


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """2,000 STS-B sentences as documents."""
    lines = (dataset("stsb") / "sts-train.csv").read_text().splitlines()
    seen: dict[str, None] = {}
    for line in lines:
        parts = line.split("\t")
        for text in parts[5:7]:
            seen.setdefault(text.strip())
        if len(seen) >= 2_000:
            break
    path = tmp_path_factory.mktemp("ray-corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                            for i, t in enumerate(list(seen)[:2_000])))
    return path


def _mrlkit(*args, **kw):
    return subprocess.run([sys.executable, "-m", "mrlkit.cli", *args], capture_output=True,
                          text=True, timeout=900, env=ENV, **kw)


def _made(store: str) -> None:
    got = _mrlkit("sets", "create", "s", "--model", "all-MiniLM-L6-v2", "--storage",
                  "float32", "--store", store)
    assert got.returncode == 0, got.stderr


def test_a_ray_job_stores_what_the_single_process_path_stores(cluster, corpus, tmp_path):
    one, many = str(tmp_path / "one"), str(tmp_path / "many")
    for store in (one, many):
        _made(store)
    got = _mrlkit("add", "s", str(corpus), "--store", one, "-q")
    assert got.returncode == 0, got.stderr
    got = _on_ray(cluster, "add", "s", str(corpus), "--store", many, "-q",
                  "--actors", "2", "--ray-batch-size", "64")
    assert got.returncode == 0, got.stderr
    a_ids, a = open_store(one).vectors("s")
    b_ids, b = open_store(many).vectors("s")
    assert sorted(a_ids) == sorted(b_ids) and len(a_ids) == 2_000
    a, b = a[np.argsort(a_ids)], b[np.argsort(b_ids)]
    assert np.abs(a - b).max() <= 1e-5
    again = _on_ray(cluster, "add", "s", str(corpus), "--store", many, "-q")
    assert "skipped 2000 already stored" in again.stdout


def _kill_midway(cluster: Cluster, corpus, store: str,
                 tmp_path) -> tuple[int, int | None, str]:
    """Start `add --ray`, SIGKILL it once 100 documents are stored; (documents stored,
    the exit code if it ended by itself first, the end of its stderr)."""
    err = tmp_path / "driver.err"
    with open(err, "w") as sink:
        driver = subprocess.Popen([sys.executable, "-m", "mrlkit.cli", "add", "s",
                                   str(corpus), "--store", store, "-q", "--ray",
                                   cluster.ensure(), "--batch-size", "100",
                                   "--ray-batch-size", "32"],
                                  stdout=subprocess.DEVNULL, stderr=sink, env=ENV)
        deadline, count = time.time() + 600, 0
        while time.time() < deadline and driver.poll() is None:
            count = open_store(store).get_set("s").count
            if count >= 100:
                break
            time.sleep(0.2)
        ended = driver.poll()  # before the kill: a driver that ended by itself says why
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    return count, ended, err.read_text()[-3000:]


def test_a_killed_driver_is_completed_by_a_rerun_without_duplicates(cluster, corpus,
                                                                   tmp_path):
    store = str(tmp_path / "killed")
    _made(store)
    count, ended, why = _kill_midway(cluster, corpus, store, tmp_path)
    if count == 0 and ended is not None and "Failed to connect" in why:
        # Ray's own connect gave up (a starved GCS): the job never began, so once more
        count, ended, why = _kill_midway(cluster, corpus, store, tmp_path)
    assert 0 < count < 2_000, (f"the driver was to die midway, at {count} documents; it "
                               f"ended by itself with {ended}: {why}")
    rerun = _on_ray(cluster, "add", "s", str(corpus), "--store", store, "-q")
    assert rerun.returncode == 0, rerun.stderr
    ids, _ = open_store(store).vectors("s")
    assert len(ids) == len(set(ids)) == 2_000
    check = _mrlkit("sets", "check", "s", "--store", store)
    assert check.returncode == 0, check.stdout + check.stderr
