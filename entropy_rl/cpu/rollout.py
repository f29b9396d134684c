"""The ``hf`` rollout backend: batched HF-transformers generation behind veRL 0.9.1's rollout interfaces.

veRL 0.9.1 only registers CUDA engines (vllm, sglang, trtllm) as rollout backends, and its old
``hf_rollout.py`` no longer matches ``BaseRollout``. This module supplies the three pieces veRL
asks of a backend, registered by :func:`register` (``actor_rollout_ref.rollout.name=hf``):

- :class:`HFReplica` (driver side, ``RolloutReplicaRegistry``): ``LLMServerManager`` builds one
  per replica and calls ``init_hybrid`` → :meth:`HFReplica.launch_servers`, which starts one
  :class:`HFRolloutServer` Ray actor; the checkpoint manager then calls ``sleep`` / ``wake_up`` /
  ``abort_all_requests`` / ``resume_generation`` / kv-cache hooks on the replica, which fans
  them out to the server (``RolloutReplica`` base methods).
- :class:`HFRolloutServer` (the Ray actor): what the agent loop's ``LLMServerClient`` calls —
  ``generate(prompt_ids, sampling_params, request_id, ...) -> TokenOutput`` — plus the control
  methods of veRL's vLLM server. veRL's agent loop sends every sample as its own concurrent
  request, so the server collects them into one left-padded batch decoded with a KV cache in a
  worker thread, and requests that arrive mid-decode join it (see :class:`BatchedDecoder`).
- :class:`HFServerAdapter` (worker side, ``_ROLLOUT_REGISTRY``): built by the hybrid worker
  (``engine_workers.py``); its ``update_weights`` forwards the actor's named full tensors
  (HF state-dict names, from ``engine.get_per_tensor_param``) to the server actor, found by name.

Sampling follows vLLM exactly, because veRL's defaults are written for it: the request's
temperature / top_k / top_p / max_tokens / repetition_penalty are the whole story (no HF
``generation_config`` default such as top_k=50 ever applies: we never call ``generate``),
``temperature < 1e-5`` means greedy, ``top_k`` of -1 or 0 and ``top_p`` of 1 mean no
truncation, and the returned log-probs are vLLM's ``logprobs_mode=processed_logprobs`` (veRL's
default): ``log_softmax`` of the logits after repetition penalty, temperature, top-k then top-p
(vLLM's ``apply_top_k_top_p``), at the sampled token. So with temperature T and no truncation
they are ``log_softmax(logits / T)``; with truncation they are renormalised over the kept
tokens; for greedy requests vLLM uses temperature 1 and no truncation, i.e. ``log_softmax(logits)``.
The EOS token is kept in the output, as vLLM does.

Randomness is per request, not per batch: each sampled request draws from its own generator
seeded by (rollout.seed, replica, weights version, prompt[, request id], occurrence), so the
samples do not depend on arrival timing or batch boundaries and a resumed run samples what the
uninterrupted one did. Row-exact (each row its own sample) needs ``rollout.full_determinism=True``,
which makes veRL pass per-row request ids; otherwise a prompt's n samples may be permuted among
its n rows (see :meth:`HFRolloutServer._sample_seed`).

Tuning (``actor_rollout_ref.rollout.engine_kwargs.hf.*``): ``batch_wait_ms`` (idle gap that
closes a batch, default 20), ``max_batch_wait_ms`` (cap on collecting, default 500),
``num_threads`` (torch threads in the server; default: every core the actor may use).
``rollout.max_num_seqs`` caps the rows decoded together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterable, Optional

import ray
import torch
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import HFModelConfig, RolloutConfig
from verl.workers.rollout.base import _ROLLOUT_REGISTRY, BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, RolloutReplicaRegistry, TokenOutput

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

ROLLOUT_NAME = "hf"
SERVER_NAME_PREFIX = f"{ROLLOUT_NAME}_"
_SAMPLING_EPS = 1e-5  # vLLM: temperature below this is greedy

# vLLM sampling options we do not implement: refuse anything but their neutral value rather
# than silently sampling from a different distribution than the caller asked for.
_NEUTRAL = {
    "n": (1, None),
    "best_of": (1, None),
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "min_p": (0, 0.0, None),
    "stop": (None, (), []),
    "prompt_logprobs": (None,),
    "min_tokens": (0, None),
    "logit_bias": (None, {}),
}
# Options that only shape text (we return token ids) or that veRL passes for other backends.
_IGNORED = {"skip_special_tokens", "spaces_between_special_tokens", "detokenize", "include_stop_str_in_output"}


# --------------------------------------------------------------------------------------------
# Sampling parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """One request's sampling settings, already resolved against the rollout config."""

    max_tokens: int
    temperature: float = 1.0
    top_k: int = -1  # -1 or 0: off
    top_p: float = 1.0
    logprobs: bool = False
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    seed: Optional[int] = None

    @property
    def greedy(self) -> bool:
        return self.temperature < _SAMPLING_EPS


_warned_keys: set[str] = set()


def parse_sampling(
    params: dict[str, Any],
    prompt_len: int,
    config: RolloutConfig,
    max_model_len: int,
) -> Sampling:
    """Turn veRL's ``sampling_params`` dict into :class:`Sampling`, the way vLLM's server does.

    Without ``max_tokens`` the budget is vLLM-server's default
    ``min(response_length, prompt_length + response_length - len(prompt))``; either way it is
    clamped to ``[1, max_model_len - len(prompt)]``.
    """
    params = dict(params)
    room = max_model_len - prompt_len
    if room < 1:
        raise ValueError(f"prompt of {prompt_len} tokens leaves no room within max_model_len={max_model_len}")
    if "max_tokens" in params:
        max_tokens = params.pop("max_tokens")
    elif "max_new_tokens" in params:
        max_tokens = params.pop("max_new_tokens")
    else:
        max_tokens = min(config.response_length, config.prompt_length + config.response_length - prompt_len)
    params.pop("max_new_tokens", None)
    max_tokens = max(1, min(int(max_tokens), room))

    for key, neutral in _NEUTRAL.items():
        if key in params:
            value = params.pop(key)
            if value not in neutral:
                raise ValueError(f"hf rollout does not support sampling option {key}={value!r}")
    for key in list(params):
        if key in _IGNORED:
            params.pop(key)
    known = {"temperature", "top_k", "top_p", "logprobs", "repetition_penalty", "ignore_eos", "stop_token_ids", "seed"}
    for key in set(params) - known:
        if key not in _warned_keys:
            _warned_keys.add(key)
            logger.warning("hf rollout ignores sampling option %r", key)

    def get(key: str, default: Any) -> Any:
        value = params.get(key)
        return default if value is None else value

    return Sampling(
        max_tokens=max_tokens,
        temperature=float(get("temperature", 1.0)),
        top_k=int(get("top_k", -1)),
        top_p=float(get("top_p", 1.0)),
        # vLLM's server: any truthy value means "return the sampled token's log-prob".
        logprobs=bool(params.get("logprobs", False)),
        repetition_penalty=float(get("repetition_penalty", config.get("repetition_penalty", 1.0))),
        ignore_eos=bool(get("ignore_eos", config.get("ignore_eos", False))),
        stop_token_ids=tuple(int(t) for t in get("stop_token_ids", ())),
        seed=None if params.get("seed") is None else int(params["seed"]),
    )


# --------------------------------------------------------------------------------------------
# Batched decoding
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Request:
    """A generation request and, once decoded, its result (filled by :class:`BatchedDecoder`)."""

    request_id: str
    prompt_ids: list[int]
    sampling: Sampling
    future: Optional[asyncio.Future] = None
    token_ids: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    finish_reason: Optional[str] = None  # "stop" | "length" | "abort"


def apply_top_k_top_p(logits: torch.Tensor, k: Optional[torch.Tensor], p: Optional[torch.Tensor]) -> torch.Tensor:
    """vLLM's ``apply_top_k_top_p`` (v1 sampler): mask to -inf what top-k, then top-p, drop.

    ``k`` holds the vocab size where top-k is off, ``p`` holds 1.0 where top-p is off; ``None``
    means off for every row. Ties at the k-th value are kept, as in vLLM; top-p is taken over
    the top-k-renormalised distribution and always keeps the most likely token.
    """
    if p is None:
        if k is None:
            return logits
        return _apply_top_k_only(logits, k)
    logits_sort, logits_idx = logits.sort(dim=-1, descending=False)
    if k is not None:
        kth = (logits_sort.size(1) - k.to(torch.long)).clamp(min=0)
        kth_value = logits_sort.gather(1, kth.unsqueeze(1))
        logits_sort.masked_fill_(logits_sort < kth_value, -float("inf"))
    probs_sum = logits_sort.softmax(dim=-1).cumsum(dim=-1)
    top_p_mask = probs_sum <= 1 - p.unsqueeze(1)
    top_p_mask[:, -1] = False
    logits_sort.masked_fill_(top_p_mask, -float("inf"))
    return logits_sort.scatter(dim=-1, index=logits_idx, src=logits_sort)


def _apply_top_k_only(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """vLLM's top-k fast path (no sort of the whole vocabulary)."""
    vocab = logits.shape[1]
    off = k >= vocab
    k = k.masked_fill(off, 1).to(torch.long)
    kth_value = logits.topk(int(k.max()), dim=1).values.gather(1, (k - 1).unsqueeze(1))
    kth_value.masked_fill_(off.unsqueeze(1), -float("inf"))
    return logits.masked_fill(logits < kth_value, -float("inf"))


class _RowParams:
    """Per-row sampling tensors for the rows currently in the batch (rebuilt when rows change)."""

    def __init__(self, samplings: list[Sampling], vocab: int):
        self.vocab = vocab
        greedy = [s.greedy for s in samplings]
        self.greedy = torch.tensor(greedy, dtype=torch.bool)
        self.all_greedy = all(greedy)
        self.any_greedy = any(greedy)
        # vLLM treats greedy rows as temperature 1, no truncation, for their processed log-probs.
        self.temperature = torch.tensor([1.0 if g else s.temperature for g, s in zip(greedy, samplings)])
        self.k = torch.tensor([vocab if g or s.top_k <= 0 else min(s.top_k, vocab) for g, s in zip(greedy, samplings)])
        self.p = torch.tensor([1.0 if g else s.top_p for g, s in zip(greedy, samplings)])
        self.use_k = bool((self.k < vocab).any())
        self.use_p = bool((self.p < 1.0).any())
        self.use_temp = bool((self.temperature != 1.0).any())
        self.penalty = torch.tensor([s.repetition_penalty for s in samplings])
        self.use_penalty = bool((self.penalty != 1.0).any())
        self.want_logprobs = any(s.logprobs for s in samplings)
        # per-request generators (vLLM's per-request seed): same samples whatever the batch
        self.gens = [torch.Generator().manual_seed(s.seed) if s.seed is not None else None for s in samplings]


@dataclass
class _Rows:
    """The rows decoded together: their requests, KV cache and left-padded attention mask.

    Every row's cache has the same length (``mask.shape[1]``): prompts are left-padded, and a
    row that joins later is left-padded to the running rows' length, or they to its.
    """

    requests: list[Request]
    params: _RowParams
    cache: Any  # transformers DynamicCache
    mask: torch.Tensor  # (rows, cache length), 1 = real token
    next_pos: torch.Tensor  # (rows,) position id of the token fed next
    seen: Optional[torch.Tensor]  # (rows, vocab) tokens seen, only when a row uses repetition_penalty
    done: list[bool]


def _seen(requests: list[Request], vocab: int) -> torch.Tensor:
    seen = torch.zeros((len(requests), vocab), dtype=torch.bool)
    for i, r in enumerate(requests):
        seen[i, torch.tensor(r.prompt_ids + r.token_ids, dtype=torch.long)] = True
    return seen


class BatchedDecoder:
    """Decodes requests as ONE left-padded batch with a KV cache, letting late requests join.

    Our own loop rather than ``model.generate``: HF's generation_config defaults (top_k=50,
    repetition penalty, ...) must never apply, each row needs its own sampling settings, and we
    need the processed log-probs of what was actually sampled.

    - Rows that finish (EOS / stop token / their max_tokens / abort) are reported at once
      through ``on_finish`` and stop contributing tokens; they leave the batch (cache rows
      included) once a quarter of it has finished, or when new rows join.
    - Between two steps ``take(n)`` is asked for up to ``n`` new requests: they are prefilled
      together and merged into the running batch. veRL's agent loop sends a step's requests
      in bursts (one per agent-loop worker) that are tens of ms apart; without joining, each
      burst would wait for the previous decode to finish.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eos_token_ids: Iterable[int],
        pad_token_id: int,
        seed: int = 0,
        max_rows: int = 1 << 30,
    ):
        self.model = model
        self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.max_rows = max_rows
        self.rng = torch.Generator().manual_seed(seed)
        self.vocab = int(model.get_output_embeddings().weight.shape[0])
        self.batches = 0
        self.batch_sizes: list[int] = []  # requests served by each decode, joiners included
        self.joins = 0
        self.prefill_sizes: list[int] = []  # rows in each prefill: a batch, or a group joining it
        self.peak_rows = 0  # most rows ever decoded together
        self.steps = 0
        self.decode_seconds = 0.0

    @torch.inference_mode()
    def decode(
        self,
        requests: list[Request],
        should_abort: Optional[Callable[[], bool]] = None,
        aborted_ids: Optional[set[str]] = None,
        take: Optional[Callable[[int], list[Request]]] = None,
        on_finish: Optional[Callable[[Request], None]] = None,
    ) -> None:
        """Fill ``token_ids`` / ``log_probs`` / ``finish_reason`` of every request in place."""
        if not requests:
            return
        t0, first_prefill = time.perf_counter(), len(self.prefill_sizes)
        rows, logits = self._prefill(requests)
        can_join = take is not None and self._joinable(rows.cache)
        served, steps = len(requests), 0
        while True:
            steps += 1
            self.peak_rows = max(self.peak_rows, len(rows.requests))
            tokens, logprobs = self._sample(logits, rows.params, rows.seen)
            token_list = tokens.tolist()
            lp_list = logprobs.tolist() if logprobs is not None else None
            abort_all = should_abort is not None and should_abort()
            for j, r in enumerate(rows.requests):
                if rows.done[j]:
                    continue
                if abort_all or (aborted_ids and r.request_id in aborted_ids):
                    r.finish_reason = "abort"
                else:
                    tok = token_list[j]
                    r.token_ids.append(tok)
                    if r.sampling.logprobs:
                        r.log_probs.append(lp_list[j])
                    if not r.sampling.ignore_eos and (tok in self.eos_token_ids or tok in r.sampling.stop_token_ids):
                        r.finish_reason = "stop"
                    elif len(r.token_ids) >= r.sampling.max_tokens:
                        r.finish_reason = "length"
                if r.finish_reason is not None:
                    rows.done[j] = True
                    if on_finish is not None:
                        on_finish(r)
            if rows.seen is not None:
                rows.seen.scatter_(1, tokens.unsqueeze(1), True)
            live = [j for j, d in enumerate(rows.done) if not d]
            new = take(self.max_rows - len(live)) if can_join and not abort_all and len(live) < self.max_rows else []
            if not live and not new:
                break
            if len(live) < len(rows.done) and (new or not live or 4 * (len(rows.done) - len(live)) >= len(rows.done)):
                rows = self._select(rows, live) if live else None
                tokens = tokens[live]
            logits = self._forward(rows, tokens) if rows is not None else None
            if new:
                new_rows, new_logits = self._prefill(new)
                if rows is None:
                    rows, logits = new_rows, new_logits
                else:
                    rows, logits = self._merge(rows, new_rows), torch.cat([logits, new_logits])
                served += len(new)
                self.joins += len(new)

        seconds = time.perf_counter() - t0
        self.batches += 1
        self.batch_sizes.append(served)
        self.steps += steps
        self.decode_seconds += seconds
        logger.info(
            "hf rollout: decoded %d requests (prefills of %s) in %d steps, %.2f s",
            served,
            self.prefill_sizes[first_prefill:],
            steps,
            seconds,
        )

    # ---- batch state -----------------------------------------------------------------------

    def _prefill(self, requests: list[Request]) -> tuple[_Rows, torch.Tensor]:
        """Run the left-padded prompts through the model; returns the rows and next-token logits."""
        from transformers import DynamicCache

        self.prefill_sizes.append(len(requests))
        lengths = [len(r.prompt_ids) for r in requests]
        width = max(lengths)
        input_ids = torch.full((len(requests), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for i, r in enumerate(requests):
            input_ids[i, width - lengths[i] :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - lengths[i] :] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp_(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        params = _RowParams([r.sampling for r in requests], self.vocab)
        seen = _seen(requests, self.vocab) if params.use_penalty else None
        rows = _Rows(list(requests), params, cache, mask, position_ids[:, -1] + 1, seen, [False] * len(requests))
        return rows, out.logits[:, -1, :].float()

    def _forward(self, rows: _Rows, tokens: torch.Tensor) -> torch.Tensor:
        """Feed each row its last sampled token; returns the next-token logits."""
        rows.mask = torch.cat([rows.mask, rows.mask.new_ones((rows.mask.shape[0], 1))], dim=1)
        out = self.model(
            input_ids=tokens.unsqueeze(1),
            attention_mask=rows.mask,
            position_ids=rows.next_pos.unsqueeze(1),
            past_key_values=rows.cache,
            use_cache=True,
        )
        rows.next_pos = rows.next_pos + 1
        return out.logits[:, -1, :].float()

    def _select(self, rows: _Rows, keep: list[int]) -> _Rows:
        index = torch.tensor(keep, dtype=torch.long)
        rows.cache.batch_select_indices(index)
        requests = [rows.requests[j] for j in keep]
        params = _RowParams([r.sampling for r in requests], self.vocab)
        for new_j, j in enumerate(keep):  # keep seeded generators' state
            params.gens[new_j] = rows.params.gens[j]
        seen = rows.seen[index] if rows.seen is not None else None
        return _Rows(requests, params, rows.cache, rows.mask[index], rows.next_pos[index], seen, [False] * len(keep))

    @staticmethod
    def _joinable(cache: Any) -> bool:
        """Rows can be merged when every cache layer is a plain growing one (not sliding-window)."""
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in cache.layers)

    def _merge(self, a: _Rows, b: _Rows) -> _Rows:
        """Stack two row sets into one batch, left-padding the shorter cache (masked out)."""
        import torch.nn.functional as F

        length = max(a.mask.shape[1], b.mask.shape[1])
        pad_a, pad_b = length - a.mask.shape[1], length - b.mask.shape[1]
        for la, lb in zip(a.cache.layers, b.cache.layers):
            la.keys = torch.cat([F.pad(la.keys, (0, 0, pad_a, 0)), F.pad(lb.keys, (0, 0, pad_b, 0))])
            la.values = torch.cat([F.pad(la.values, (0, 0, pad_a, 0)), F.pad(lb.values, (0, 0, pad_b, 0))])
        requests = a.requests + b.requests
        params = _RowParams([r.sampling for r in requests], self.vocab)
        params.gens = a.params.gens + b.params.gens
        seen = _seen(requests, self.vocab) if params.use_penalty else None
        return _Rows(
            requests,
            params,
            a.cache,
            torch.cat([F.pad(a.mask, (pad_a, 0)), F.pad(b.mask, (pad_b, 0))]),
            torch.cat([a.next_pos, b.next_pos]),
            seen,
            a.done + b.done,
        )

    # ---- sampling --------------------------------------------------------------------------

    def _sample(
        self,
        logits: torch.Tensor,
        params: _RowParams,
        seen: Optional[torch.Tensor],
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Next token per row and, if any row asked, its processed log-prob (vLLM's sampler order)."""
        if params.use_penalty:
            penalty = torch.where(seen, params.penalty.unsqueeze(1), 1.0)
            logits = logits * torch.where(logits > 0, 1.0 / penalty, penalty)
        greedy_tokens = logits.argmax(dim=-1) if params.any_greedy else None
        if params.all_greedy and not params.want_logprobs:
            return greedy_tokens, None

        processed = logits / params.temperature.unsqueeze(1) if params.use_temp else logits
        processed = apply_top_k_top_p(processed, params.k if params.use_k else None, params.p if params.use_p else None)
        logprobs = processed.log_softmax(dim=-1) if params.want_logprobs else None
        if params.all_greedy:
            tokens = greedy_tokens
        else:
            probs = logprobs.exp() if logprobs is not None else processed.softmax(dim=-1)
            # Exponential race (vLLM's random_sample): argmax(p / q), q ~ Exp(1), samples from p.
            # A seeded row draws its noise from its own generator, whatever the batch around it.
            gens = params.gens
            if any(g is None and not greedy for g, greedy in zip(gens, params.greedy.tolist())):
                q = torch.empty_like(probs).exponential_(generator=self.rng)
            else:
                q = torch.ones_like(probs)
            for j, g in enumerate(gens):
                if g is not None:
                    q[j].exponential_(generator=g)
            tokens = (probs / q).argmax(dim=-1)
            if greedy_tokens is not None:
                tokens = torch.where(params.greedy, greedy_tokens, tokens)
        chosen = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1) if logprobs is not None else None
        return tokens, chosen


# --------------------------------------------------------------------------------------------
# The server (one Ray actor per replica)
# --------------------------------------------------------------------------------------------


def _server_options(config: RolloutConfig) -> dict[str, Any]:
    return dict((config.engine_kwargs or {}).get(ROLLOUT_NAME) or {})


def load_model(model_config: HFModelConfig) -> torch.nn.Module:
    """The rollout's own copy of the policy: float32 on CPU, SDPA attention (no flash-attn here)."""
    import copy

    from transformers import AutoModelForCausalLM

    hf_config = copy.deepcopy(model_config.hf_config)
    model = AutoModelForCausalLM.from_pretrained(
        model_config.local_path,
        config=hf_config,
        dtype=torch.float32,
        attn_implementation="sdpa",
        trust_remote_code=model_config.trust_remote_code,
    )
    return model.eval().requires_grad_(False)


def _eos_ids(model_config: HFModelConfig) -> set[int]:
    """EOS ids as vLLM uses them: the tokenizer's plus generation_config's (which may be a list)."""
    ids: set[int] = set()
    sources = [
        getattr(model_config.tokenizer, "eos_token_id", None),
        getattr(model_config.generation_config, "eos_token_id", None),
    ]
    if not any(s is not None for s in sources):
        sources.append(getattr(model_config.hf_config, "eos_token_id", None))
    for s in sources:
        if s is None:
            continue
        ids.update(int(t) for t in (s if isinstance(s, (list, tuple)) else [s]))
    return ids


class HFRolloutServer:
    """Token-in/token-out generation server with vLLM-server's method surface, on HF transformers.

    ``generate`` queues the request. When no decode is running, a scheduler task on the actor's
    event loop closes a batch once ``max_num_seqs`` requests wait or no new request arrived for
    ``batch_wait_ms`` (capped at ``max_batch_wait_ms``), and decodes it with
    :class:`BatchedDecoder` in a single worker thread, so the event loop keeps accepting
    requests. Requests arriving during a decode join it at the next step (up to
    ``max_num_seqs`` rows), and each caller gets its result as soon as its own sequence ends.
    Weight loads run in the same thread, so they never interleave with a decode. It runs as a
    Ray actor (launched by :class:`HFReplica`) or in-process (tests); all public methods are
    ``async``, as Ray's async actors require.
    """

    def __init__(
        self,
        config: RolloutConfig | Any,
        model_config: HFModelConfig | Any,
        rollout_mode: RolloutMode = RolloutMode.HYBRID,
        workers: Optional[list] = None,
        replica_rank: int = 0,
        node_rank: int = 0,
        gpus_per_node: int = 1,
        nnodes: int = 1,
        num_threads: Optional[int] = None,
        model: Optional[torch.nn.Module] = None,
    ):
        self.config: RolloutConfig = omega_conf_to_dataclass(config, dataclass_type=RolloutConfig)
        self.model_config: HFModelConfig = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.rollout_mode = rollout_mode
        self.replica_rank = replica_rank
        self.node_rank = node_rank
        opts = _server_options(self.config)
        self.batch_wait_s = float(opts.get("batch_wait_ms", 20)) / 1000
        self.max_batch_wait_s = float(opts.get("max_batch_wait_ms", 500)) / 1000
        num_threads = opts.get("num_threads", num_threads)
        if num_threads is not None:
            # Ray limits an actor's torch to OMP_NUM_THREADS (1 for us); generation alternates
            # with training, so the server may use every core it is allowed.
            num_threads = len(os.sched_getaffinity(0)) if int(num_threads) <= 0 else int(num_threads)
            torch.set_num_threads(num_threads)

        self.model = model if model is not None else load_model(self.model_config)
        hf_config = self.model.config
        self.max_model_len = int(
            self.config.max_model_len or getattr(hf_config, "max_position_embeddings", None) or 1 << 30
        )
        tok = self.model_config.tokenizer
        pad = getattr(tok, "pad_token_id", None)
        pad = pad if pad is not None else getattr(hf_config, "pad_token_id", None)
        self.decoder = BatchedDecoder(
            self.model,
            eos_token_ids=_eos_ids(self.model_config),
            pad_token_id=pad if pad is not None else 0,
            seed=self.config.seed + replica_rank,
            max_rows=int(opts.get("max_num_seqs", self.config.max_num_seqs)),
        )
        # Tensors sharing storage with the parameters, under the model's own names and under the
        # checkpoint names veRL's FSDP engine sends (``convert_weight_keys``; differs for VL models).
        from verl.utils.model import convert_weight_keys

        state = self.model.state_dict()
        self._params = {**state, **convert_weight_keys(state, self.model)}

        self.global_steps = None
        self._occurrences: dict[str, int] = {}  # request key -> requests since the weights changed
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="hf-rollout",
            initializer=torch.set_num_threads if num_threads else None,
            initargs=(num_threads,) if num_threads else (),
        )
        # Shared with the decode thread (which takes joiners from _pending): guarded by _lock.
        self._lock = threading.Lock()
        self._pending: list[Request] = []
        self._running: list[Request] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._scheduler: Optional[asyncio.Task] = None
        self._has_pending: Optional[asyncio.Event] = None
        self._abort = threading.Event()
        self._aborted_ids: set[str] = set()
        # Admission gate, as vLLM's server: closed by abort_all_requests, opened by resume_generation.
        self._paused = False
        self._rejecting = False
        self._resume: Optional[asyncio.Event] = None
        self._server_address = f"{ROLLOUT_NAME}-replica-{replica_rank}@{ray.util.get_node_ip_address().strip('[]')}"

    @property
    def max_num_seqs(self) -> int:
        """Most sequences decoded together (``rollout.max_num_seqs``)."""
        return self.decoder.max_rows

    @max_num_seqs.setter
    def max_num_seqs(self, value: int) -> None:
        self.decoder.max_rows = int(value)

    # ---- generation -----------------------------------------------------------------------

    def _ensure_loop_state(self) -> None:
        """Create the asyncio objects lazily, in the loop that serves us: Ray builds the actor
        outside its event loop (and in-process users may run several loops one after another)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._has_pending = asyncio.Event()
            if self._pending:
                self._has_pending.set()
            self._resume = asyncio.Event()
            if not self._paused:
                self._resume.set()
            self._scheduler = None
        if self._scheduler is None or self._scheduler.done():
            self._scheduler = loop.create_task(self._schedule())

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        audio_data: Optional[list[Any]] = None,
        mm_processor_kwargs: Optional[dict[str, Any]] = None,
        priority: int = 0,
        **kwargs: Any,
    ) -> TokenOutput:
        """vLLM-server's ``generate``: same arguments, same ``TokenOutput`` (token ids, processed
        log-probs when ``sampling_params["logprobs"]`` is truthy, ``stop_reason`` "completed" or
        "aborted", ``extra_fields["global_steps"]``)."""
        if image_data is not None or video_data is not None or audio_data is not None:
            raise NotImplementedError("hf rollout is text-only")
        from verl.utils import normalize_token_ids

        prompt_ids = list(normalize_token_ids(prompt_ids))
        sampling = parse_sampling(sampling_params, len(prompt_ids), self.config, self.max_model_len)
        self._ensure_loop_state()
        while self._paused:
            if self._rejecting:
                return self._output(Request(request_id, prompt_ids, sampling, finish_reason="abort"))
            await self._resume.wait()
        if sampling.seed is None and not sampling.greedy:
            sampling = dataclasses.replace(sampling, seed=self._sample_seed(request_id, prompt_ids))
        request = Request(request_id, prompt_ids, sampling, future=asyncio.get_running_loop().create_future())
        with self._lock:
            self._pending.append(request)
        self._has_pending.set()
        await request.future
        return self._output(request)

    def _output(self, r: Request) -> TokenOutput:
        extra = {"global_steps": self.global_steps, "num_cached_tokens": 0}
        aborted = r.finish_reason == "abort"
        return TokenOutput(
            token_ids=list(r.token_ids),
            log_probs=list(r.log_probs) if r.sampling.logprobs and not (aborted and not r.token_ids) else None,
            stop_reason="aborted" if aborted else "completed",
            num_preempted=0,
            extra_fields=extra,
        )

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._has_pending.wait()
            self._has_pending.clear()
            if not self._pending:  # the last decode took them as joiners
                continue
            # Collect: a step's requests arrive within ~0.1 s; wait until they stop coming.
            start, seen = loop.time(), -1
            while len(self._pending) < self.max_num_seqs and len(self._pending) != seen:
                if loop.time() - start >= self.max_batch_wait_s:
                    break
                seen = len(self._pending)
                await asyncio.sleep(self.batch_wait_s)
            batch = self._take(self.max_num_seqs)
            if not batch:
                continue
            try:
                await loop.run_in_executor(
                    self._executor,
                    self.decoder.decode,
                    batch,
                    self._abort.is_set,
                    self._aborted_ids,
                    self._take,
                    self._resolve_threadsafe,
                )
            except Exception as e:  # hand the error to every caller instead of hanging them
                logger.exception("hf rollout: batched decode failed")
                for r in self._running:
                    if not r.future.done():
                        r.future.set_exception(e)
            finally:
                with self._lock:
                    running, self._running = self._running, []
                    if self._pending:
                        self._has_pending.set()
                for r in running:
                    self._aborted_ids.discard(r.request_id)
                    self._resolve(r)

    def _take(self, n: int) -> list[Request]:
        """Move up to ``n`` queued requests to the running set (called from both threads)."""
        with self._lock:
            taken = []
            while self._pending and len(taken) < n:
                r = self._pending.pop(0)
                if not r.future.done():  # skip callers that went away
                    taken.append(r)
            self._running.extend(taken)
            return taken

    @staticmethod
    def _resolve(r: Request) -> None:
        if not r.future.done():
            r.future.set_result(None)

    @classmethod
    def _resolve_threadsafe(cls, r: Request) -> None:
        """From the decode thread: wake the caller now, in the loop that awaits it."""
        try:
            r.future.get_loop().call_soon_threadsafe(cls._resolve, r)
        except RuntimeError:  # that loop is closed: the caller is gone
            pass

    # ---- weights --------------------------------------------------------------------------

    async def update_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Copy the actor's named full tensors (HF state-dict names) into the model, in the decode
        thread so a load never interleaves with a decode. Unknown names or shapes raise: a silent
        partial load would leave the rollout policy stale."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._load, named_tensors)

    @torch.no_grad()
    def _load(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        unknown = []
        for name, tensor in named_tensors:
            target = self._params.get(name)
            if target is None:
                unknown.append(name)
                continue
            if target.shape != tensor.shape:
                raise ValueError(f"{name}: shape {tuple(tensor.shape)} does not match {tuple(target.shape)}")
            target.copy_(tensor)
        if unknown:
            raise KeyError(f"hf rollout: {len(unknown)} weights not in the model, e.g. {unknown[:5]}")
        return len(named_tensors)

    async def set_global_steps(self, global_steps: int):
        """Weights version, returned in every TokenOutput's extra_fields; restarts the sample seeds."""
        self.global_steps = global_steps
        self._occurrences.clear()

    def _sample_seed(self, request_id: str, prompt_ids: list[int]) -> int:
        """Seed of a request's own sampling generator: (rollout seed, replica, weights version,
        request key, how many times that key was asked for since the weights changed).

        Why: requests arrive in a timing-dependent order and join batches at timing-dependent
        steps, so one shared generator would give a resumed run other samples than the
        uninterrupted one. The request key is the prompt: a step's samples then depend only on
        the seed, the weights and the prompts, though which of a prompt's n (exchangeable)
        requests gets which sample still follows arrival order. With
        ``rollout.full_determinism=True`` veRL's client passes the agent loop's per-row id
        (``det-<row>``) as request_id, and the key becomes (id, prompt): every row gets the same
        sample in every run. With several replicas the load balancer's choice matters too
        (under full_determinism it routes by request id, deterministically).
        """
        key = hashlib.blake2b(digest_size=16)
        key.update(torch.tensor(prompt_ids, dtype=torch.int64).numpy().tobytes())
        if self.config.full_determinism:
            key.update(f"|{request_id}".encode())
        request_key = key.hexdigest()
        n = self._occurrences.get(request_key, 0)
        self._occurrences[request_key] = n + 1
        key.update(f"|{self.config.seed}|{self.replica_rank}|{self.global_steps}|{n}".encode())
        return int.from_bytes(key.digest()[:8], "little") & ((1 << 63) - 1)

    # ---- control surface of vLLM's server (what replicas / checkpoint manager call) --------

    async def ready(self) -> bool:
        return True

    async def get_server_address(self) -> str:
        """Identifier used as the load balancer's server id; there is no HTTP endpoint."""
        return self._server_address

    async def get_rollout_config(self) -> RolloutConfig:
        return self.config

    async def get_stats(self) -> dict[str, Any]:
        d = self.decoder
        return {
            "batches": d.batches,
            "batch_sizes": list(d.batch_sizes),
            "joined": d.joins,
            "prefill_sizes": list(d.prefill_sizes),
            "peak_rows": d.peak_rows,
            "steps": d.steps,
            "decode_s": d.decode_seconds,
            "torch_threads": await asyncio.get_running_loop().run_in_executor(self._executor, torch.get_num_threads),
        }

    async def wake_up(self, tags: Optional[list[str]] = None):
        """No-op: weights and the (per-batch) KV cache live in host memory."""

    async def sleep(self):
        """No-op: nothing is worth releasing on CPU; the KV cache only lives during a batch."""

    async def clear_kv_cache(self):
        """No-op: no prefix cache; each batch builds and drops its own KV cache."""

    async def release_kv_cache(self):
        """No-op (see clear_kv_cache)."""

    async def resume_kv_cache(self):
        """No-op (see clear_kv_cache)."""

    async def start_profile(self, **kwargs):
        """No-op: profiling is a vLLM-engine feature."""

    async def stop_profile(self):
        """No-op."""

    async def wait_for_requests_to_drain(self):
        while self._pending or self._running:
            await asyncio.sleep(0.005)

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        """Close the admission gate and end every request: queued ones return empty, running ones
        return their tokens so far, both with ``stop_reason="aborted"`` (as vLLM's pause). Requests
        arriving while closed wait for :meth:`resume_generation`, or fail at once if
        ``reject_request``."""
        self._ensure_loop_state()
        self._paused, self._rejecting = True, reject_request
        self._resume.clear()
        with self._lock:
            queued, running = list(self._pending), list(self._running)
            self._pending.clear()
        for r in queued:
            r.finish_reason = "abort"
            self._resolve(r)
        self._abort.set()
        try:
            while self._running:
                await asyncio.sleep(0.005)
        finally:
            self._abort.clear()
        ids = [r.request_id for r in queued + running]
        return {"aborted_count": len(ids), "request_ids": ids}

    async def resume_generation(self):
        self._ensure_loop_state()
        self._paused = self._rejecting = False
        self._resume.set()

    async def resume_engine_generation(self):
        """vLLM splits resume into engine + gate; one step here."""
        await self.resume_generation()

    async def open_submission_gate(self):
        await self.resume_generation()

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict[str, Any]:
        with self._lock:
            queued = next((r for r in self._pending if r.request_id == request_id), None)
            if queued is not None:
                self._pending.remove(queued)
            running = any(r.request_id == request_id for r in self._running)
            if running:
                self._aborted_ids.add(request_id)
        if queued is not None:
            queued.finish_reason = "abort"
            self._resolve(queued)
        if queued is not None or running:
            return {"aborted": True, "request_id": request_id}
        return {"aborted": False, "request_id": request_id, "error": f"Request {request_id} not found"}


# --------------------------------------------------------------------------------------------
# Driver side: the replica
# --------------------------------------------------------------------------------------------


def server_actor_name(replica_rank: int, node_rank: int = 0, role: str = "", name_suffix: str = "") -> str:
    """Ray actor name of a replica's server; the adapter finds the server by this name."""
    role = f"{role}_" if role else ""
    return f"{SERVER_NAME_PREFIX}server_{role}{replica_rank}_{node_rank}{name_suffix}"


class HFReplica(RolloutReplica):
    """One rollout replica = one :class:`HFRolloutServer` actor, on the node of its workers.

    A replica spans ``tensor_model_parallel_size * data_parallel_size`` workers as in vLLM, but
    the server is a single process on one node (no model parallelism). The ``RolloutReplica``
    base class fans sleep / wake_up / abort / resume / kv-cache calls out to ``self.servers``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(HFRolloutServer)

    async def launch_servers(self):
        if self.nnodes != 1:
            raise NotImplementedError("hf rollout runs each replica on one node")
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
        else:
            node_id = ray.get_runtime_context().get_node_id()
        role = "reward" if self.is_reward_model else "teacher" if self.is_teacher_model else ""
        opts = _server_options(self.config)
        server = self.server_class.options(
            name=server_actor_name(self.replica_rank, 0, role, self.name_suffix),
            # num_cpus=0: never wait for a logical CPU (placement groups hold most of them);
            # the server sets its torch threads itself (num_threads below).
            num_cpus=0,
            max_concurrency=self.max_concurrency,
            scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id=node_id, soft=False
            ),
        ).remote(
            config=self.config,
            model_config=self.model_config,
            rollout_mode=self.rollout_mode,
            replica_rank=self.replica_rank,
            node_rank=0,
            gpus_per_node=self.gpus_per_replica_node,
            nnodes=1,
            num_threads=opts.get("num_threads", -1),
        )
        self.servers = [server]
        self._server_handle = server
        self._server_address = await server.get_server_address.remote()

    async def sleep(self):
        """Let in-flight requests finish first, as vLLM's replica does."""
        await asyncio.gather(*[s.wait_for_requests_to_drain.remote() for s in self.servers])
        await asyncio.gather(*[s.sleep.remote() for s in self.servers])

    async def abort_request(self, request_id: str) -> dict[str, Any]:
        results = await asyncio.gather(*[s.abort_request.remote(request_id) for s in self.servers])
        return next((r for r in results if r.get("aborted")), results[0])


# --------------------------------------------------------------------------------------------
# Worker side: the adapter
# --------------------------------------------------------------------------------------------


async def _aiter(items: Iterable | AsyncIterator) -> AsyncIterator:
    if hasattr(items, "__aiter__"):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class HFServerAdapter(BaseRollout):
    """Worker-side handle on this worker's replica server (``engine_workers.py`` builds one per
    rank; ``CheckpointEngineWorker`` too, for non-naive checkpoint engines).

    Rank → replica mapping is vLLM's: ``replica_rank = rank // rollout_world_size``; only each
    replica's first rank talks to the server. Every rank still walks the weight generator:
    FSDP gathers each full tensor collectively, so a rank that skipped it would hang the others.
    """

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1, *args, **kwargs):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        world = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % world
        self.is_leader_rank = self.rollout_rank == 0
        self.server_handle: Optional[ray.actor.ActorHandle] = None

    def _server(self) -> Optional[ray.actor.ActorHandle]:
        """The server actor, looked up lazily: it is launched after the hybrid workers."""
        if not self.is_leader_rank:
            return None
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_actor_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]):
        if self.config.free_cache_engine and (server := self._server()) is not None:
            await server.wake_up.remote(tags=tags)

    async def release(self):
        if self.config.free_cache_engine and (server := self._server()) is not None:
            await server.sleep.remote()

    async def update_weights(
        self,
        weights,
        global_steps: Optional[int] = None,
        wire_format: str = "named_tensors",
        peft_config: Any = None,
        base_sync_done: bool = True,
        **kwargs,
    ):
        """Send ``(name, full tensor)`` pairs to the server in buckets of
        ``checkpoint_engine.update_weights_bucket_megabytes``, then tag the weights version."""
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf rollout takes wire_format='named_tensors', got {wire_format!r}")
        if peft_config is not None:
            raise NotImplementedError("hf rollout loads full weights only: set actor_rollout_ref.model.lora.merge=True")
        server = self._server()
        limit = max(1, int(self.config.checkpoint_engine.update_weights_bucket_megabytes)) << 20
        bucket, size, sent = [], 0, 0
        async for name, tensor in _aiter(weights):
            if server is None:
                continue
            t = tensor.detach().to("cpu").contiguous()
            bucket.append((name, t))
            size += t.numel() * t.element_size()
            if size >= limit:
                sent += await server.update_weights.remote(bucket)
                bucket, size = [], 0
        if server is None:
            return
        if bucket:
            sent += await server.update_weights.remote(bucket)
        await server.clear_kv_cache.remote()
        if global_steps is not None:
            await server.set_global_steps.remote(global_steps)
        logger.info("hf rollout: replica %d loaded %d tensors (step %s)", self.replica_rank, sent, global_steps)

    def generate_sequences(self, prompts):
        raise NotImplementedError("hf rollout serves the agent loop through HFRolloutServer.generate")


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


def _load_replica() -> type[RolloutReplica]:
    return HFReplica


def register() -> None:
    """Register ``hf`` in both of veRL's rollout registries, and the CPU flavour of veRL's
    ``vllm`` worker-side adapter (:class:`entropy_rl.cpu.vllm.CPUServerAdapter`; a name only,
    imported when a ``vllm`` rollout is built). Idempotent."""
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)
    _ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = "entropy_rl.cpu.rollout.HFServerAdapter"
    _ROLLOUT_REGISTRY[("vllm", "async")] = "entropy_rl.cpu.vllm.CPUServerAdapter"


__all__ = [
    "ROLLOUT_NAME",
    "BatchedDecoder",
    "HFReplica",
    "HFRolloutServer",
    "HFServerAdapter",
    "Request",
    "Sampling",
    "apply_top_k_top_p",
    "parse_sampling",
    "register",
]
