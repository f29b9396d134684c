"""The evaluation's generation backends: transformers ``generate`` (:class:`HFGenerator`) and
vLLM, on a GPU or vLLM's CPU build (:class:`VLLMGenerator`). Both sample the full distribution
at the given temperature / top-p (no top-k) and return text without the prompt."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol


class BackendUnavailable(RuntimeError):
    """The chosen generation backend cannot be imported here."""


class Generator(Protocol):
    tokenizer: Any  # used for the chat template

    def generate(self, prompts: list[str], n: int) -> list[list[str]]:
        """``n`` sampled completions (text, prompt excluded) for each prompt, in order."""
        ...


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 2048
    seed: int = 0


class HFGenerator:
    """transformers ``generate``: ``do_sample``, full distribution (``top_k=0``), left padding.

    ``batch_size`` bounds the sequences per ``generate`` call (prompts × samples); a prompt
    whose ``n`` exceeds it is sampled in several calls.
    """

    def __init__(self, model_path: str, sampling: SamplingConfig, batch_size: int = 64, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.sampling = sampling
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        gc = self.model.generation_config
        self.eos_token_id = gc.eos_token_id if gc.eos_token_id is not None else self.tokenizer.eos_token_id
        torch.manual_seed(sampling.seed)

    def _call(self, prompts: list[str], n: int) -> list[list[str]]:
        from transformers import GenerationConfig

        s = self.sampling
        greedy = s.temperature == 0
        cfg = GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else s.temperature,
            top_p=None if greedy else s.top_p,
            top_k=None if greedy else 0,
            max_new_tokens=s.max_new_tokens,
            num_return_sequences=1 if greedy else n,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_token_id,
        )
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        with self.torch.inference_mode():
            out = self.model.generate(**enc, generation_config=cfg)
        texts = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        per = 1 if greedy else n
        groups = [texts[i * per : (i + 1) * per] for i in range(len(prompts))]
        return [g * n for g in groups] if greedy else groups

    def generate(self, prompts: list[str], n: int) -> list[list[str]]:
        out: list[list[str]] = []
        if n > self.batch_size:
            for p in prompts:
                got: list[str] = []
                while len(got) < n:
                    got += self._call([p], min(self.batch_size, n - len(got)))[0]
                out.append(got)
            return out
        step = max(1, self.batch_size // n)
        for i in range(0, len(prompts), step):
            out += self._call(prompts[i : i + step], n)
        return out


def is_cpu_vllm() -> bool:
    """Whether the installed vLLM is the CPU build (its distribution version carries ``+cpu``)."""
    import importlib.metadata

    try:
        return "cpu" in importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return False


class VLLMGenerator:
    """vLLM offline ``LLM.generate`` with ``SamplingParams(n, temperature, top_p, max_tokens, seed)``."""

    def __init__(
        self,
        model_path: str,
        sampling: SamplingConfig,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
    ):
        self._shm_before = None
        if is_cpu_vllm():
            from entropy_rl.cpu import shm
            from entropy_rl.cpu.platform import vllm_cpu_env

            os.environ.update(vllm_cpu_env())  # before vLLM reads it and spawns its engine
            self._shm_before = shm.snapshot()
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:
            raise BackendUnavailable(
                f"--backend vllm needs vLLM, which is not importable here ({e}). Run inside the project's "
                "Docker image or `pip install .[gpu]` on a GPU machine, or use `--backend hf` (slow)."
            ) from e
        self.SamplingParams = SamplingParams
        self.sampling = sampling
        kwargs: dict[str, Any] = dict(
            model=model_path,
            seed=sampling.seed,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[str], n: int) -> list[list[str]]:
        s = self.sampling
        sp = self.SamplingParams(
            n=n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens, seed=s.seed
        )
        # token ids, not text: the chat template already holds any BOS the model needs
        reqs = [{"prompt_token_ids": self.tokenizer(p, add_special_tokens=False).input_ids} for p in prompts]
        outs = self.llm.generate(reqs, sp, use_tqdm=False)
        return [[o.text for o in out.outputs] for out in outs]

    def close(self) -> None:
        """Stop vLLM's engine process; on the CPU build, remove what it left in /dev/shm."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
        if self._shm_before is not None:
            import psutil

            from entropy_rl.cpu import shm

            # the engine processes must be gone before their /dev/shm entries count as left over
            children = psutil.Process().children(recursive=True)
            _, alive = psutil.wait_procs(children, timeout=10)
            for p in alive:
                p.kill()
            psutil.wait_procs(alive, timeout=5)
            shm.sweep(self._shm_before)
