"""Remove the ``/dev/shm`` entries a local CPU run's killed processes leave behind.

At the end of a run Ray kills its worker processes, and veRL's vLLM workers die by parent-death
signal; none of them gets to run its exit handlers. What they had in ``/dev/shm`` stays there
for good (seen after every ``backend=cpu_vllm`` run): the Intel OpenMP runtime's registration
file (``__KMP_REGISTERED_LIB_<pid>_<uid>``), vLLM's shared-memory message queues (``psm_*``),
Python multiprocessing semaphores (``sem.mp-*``), and, from a weight sync cut short, veRL's
bucket (``verl_weights_*``, one bucket-size each).

:func:`sweep` removes only entries that (1) did not exist when the run started, (2) carry one
of those names, and (3) no living process has open or mapped — so a second job on the same
machine keeps its own.
"""

from __future__ import annotations

import os
import re
import time

import psutil

SHM = "/dev/shm"
_LEFT_BY_KILLED = re.compile(
    r"^(__KMP_REGISTERED_LIB_(?P<pid>\d+)_\d+|psm_[0-9a-f]+|sem\.mp-.+|verl_weights_[0-9a-f]+)$"
)


def snapshot() -> set[str]:
    """The names in ``/dev/shm`` now (empty where there is no ``/dev/shm``)."""
    try:
        return set(os.listdir(SHM))
    except OSError:
        return set()


def in_use() -> set[str]:
    """Names in ``/dev/shm`` that some living process has open or mapped."""
    used: set[str] = set()
    prefix = SHM + "/"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    i = line.find(prefix)
                    if i >= 0:
                        used.add(line[i + len(prefix) :].split()[0])
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(prefix):
                    used.add(target[len(prefix) :])
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return used


def sweep(before: set[str], wait_s: float = 15.0) -> list[str]:
    """Remove what killed processes of this run left in ``/dev/shm``; returns the names removed.

    Waits up to ``wait_s`` for the run's processes to exit (entries still in use are retried).
    """
    removed: list[str] = []
    deadline = time.monotonic() + wait_s
    while True:
        candidates = {n for n in snapshot() - before if _LEFT_BY_KILLED.match(n)}
        busy = in_use() & candidates if candidates else set()
        for name in sorted(candidates - busy):
            pid = _LEFT_BY_KILLED.match(name).group("pid")
            if pid and psutil.pid_exists(int(pid)):
                busy.add(name)
                continue
            try:
                os.unlink(os.path.join(SHM, name))
                removed.append(name)
            except FileNotFoundError:
                pass
        if not busy or time.monotonic() > deadline:
            return removed
        time.sleep(0.5)
