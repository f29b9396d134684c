"""Per-step entropy machinery of the recipe, on plain tensors (no Ray, no veRL types).

The trainer (:mod:`recipe.sent.ray_trainer`) calls :meth:`EntropyHooks.on_batch` once per
training step, after veRL has computed old log-probs, token entropy and advantages for the
whole batch and before the actor update. It returns per-token fields to attach to the batch
(read by the installed loss, :func:`recipe.sent.worker_loss.entropy_rl_loss`) and metrics:

- SENT token selection over the *whole* training batch (``token_kl.selection: batch``): the
  top-k% covariance is global across micro-batches and data-parallel ranks, unlike the
  release and veRL's kl_cov, which select inside each micro-batch;
- AER: α_t from the batch entropy, per-prompt weights from group accuracy, e_t = α_t·w;
- adaptive curriculum: this step's n rollouts per prompt refresh the prompt's semantic
  entropy and pass rate (EMA), at zero extra generations, and the sampler re-orders what it
  has not yet yielded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from entropy_rl.aer import AERConfig, AERController
from entropy_rl.losses import TOKEN_HIGH_COV, TOKEN_LOW_COV, TOKEN_OUTSIDE, SentKLConfig, cov_counts, select_tokens
from entropy_rl.semantic_entropy import cluster_answers, semantic_entropy
from recipe.sent.config import validate

# Fields the hooks attach to the batch; the installed loss reads them.
FIELD_TOKEN_SET = "sent_token_set"
FIELD_ENTROPY_COEF = "aer_entropy_coef"

# Difficulty buckets of group accuracy for the per-bucket entropy metric.
_BUCKETS = (("unsolved", 0.0, 0.0), ("hard", 1e-9, 0.5), ("easy", 0.5 + 1e-9, 1.0 - 1e-9), ("solved", 1.0, 1.0))


def _dataclass_from(section: str, cls, cfg: Any, skip: Sequence[str] = ()):
    """Build ``cls`` from the ``entropy_rl.<section>`` mapping, checked by the one schema
    (:func:`recipe.sent.config.validate`: unknown keys, types, allowed values, ranges)."""
    from omegaconf import DictConfig, OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    validate({section: data})
    return cls(**{k: v for k, v in data.items() if k not in skip})


def sent_config(token_kl: Any) -> SentKLConfig:
    """``entropy_rl.token_kl`` → :class:`SentKLConfig` (``enable``/``selection`` are the recipe's)."""
    return _dataclass_from("token_kl", SentKLConfig, token_kl, skip=("enable", "selection"))


def aer_config(aer: Any) -> AERConfig:
    """``entropy_rl.aer`` → :class:`AERConfig`."""
    return _dataclass_from("aer", AERConfig, aer, skip=("enable",))


@dataclass(frozen=True)
class MicroBatchLayout:
    """How veRL 0.9.1's actor update cuts one training batch into the micro-batches its loss sees.

    The driver's batch (after ``balance_batch``) is split into ``dp_size`` contiguous rank
    chunks; each rank cuts its chunk into mini-batches of ``mini_batch_rows / dp_size``
    consecutive rows (``actor.shuffle=false``, veRL's default) and each mini-batch into
    micro-batches: ``micro_batch_rows`` consecutive rows, or, with ``use_dynamic_bsz``, veRL's
    token-balanced partition under ``max_token_len`` (same count on every rank). SENT's
    release selected inside each of these micro-batches; ``cov_count: release`` needs them to
    count what it would have selected. With ``actor.shuffle=true`` the mini-batch membership
    is a random draw of the worker's: the count then uses the unshuffled layout (the same
    number of micro-batches, so at SENT's k — one token per micro-batch — the same count).

    Attributes:
        dp_size: data-parallel ranks of the actor (GPUs / Ulysses sequence-parallel size).
        mini_batch_rows: rows (responses) of one mini-batch over all ranks: ppo_mini_batch_size·n.
        micro_batch_rows: rows of a micro-batch per GPU (``None`` with dynamic batch size).
        max_token_len: token budget of a micro-batch per GPU (dynamic batch size only).
    """

    dp_size: int
    mini_batch_rows: int
    micro_batch_rows: int | None = None
    max_token_len: int | None = None

    def __post_init__(self) -> None:
        if self.dp_size < 1 or self.mini_batch_rows < 1:
            raise ValueError(f"MicroBatchLayout needs dp_size, mini_batch_rows >= 1, got {self}")
        if (self.micro_batch_rows is None) == (self.max_token_len is None):
            raise ValueError(f"MicroBatchLayout needs exactly one of micro_batch_rows / max_token_len, got {self}")

    @classmethod
    def from_config(cls, config: Any) -> MicroBatchLayout:
        """The layout a composed trainer config gives veRL's actor update."""
        actor = config.actor_rollout_ref.actor
        n = int(config.actor_rollout_ref.rollout.n)
        world = int(config.trainer.nnodes) * int(config.trainer.n_gpus_per_node)
        sp = int((actor.get("fsdp_config") or {}).get("ulysses_sequence_parallel_size", 1) or 1)
        sp = max(sp, int(actor.get("ulysses_sequence_parallel_size", 1) or 1))
        dp = max(world // sp, 1)
        mini = int(actor.ppo_mini_batch_size) * n
        if actor.get("use_dynamic_bsz", False):
            return cls(dp, mini, max_token_len=int(actor.ppo_max_token_len_per_gpu) * sp)
        micro = actor.get("ppo_micro_batch_size_per_gpu")
        if micro is None and actor.get("ppo_micro_batch_size") is not None:
            micro = int(actor.ppo_micro_batch_size) // dp
        if micro is None:
            raise ValueError("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu is unset and use_dynamic_bsz is off")
        return cls(dp, mini, micro_batch_rows=int(micro))

    def micro_batch_ids(self, n_rows: int, seq_lens: Sequence[int] | None = None) -> tuple[torch.Tensor, int]:
        """(B,) micro-batch id of every row of a training batch of ``n_rows``, and their number.

        ``seq_lens`` (prompt + response tokens per row) is needed with dynamic batch size.
        """
        ranks = np.array_split(np.arange(n_rows), self.dp_size)
        mini = max(min(self.mini_batch_rows // self.dp_size, max(len(r) for r in ranks)), 1)
        minis = [[r[i : i + mini] for i in range(0, len(r), mini)] for r in ranks]
        ids = np.zeros(n_rows, dtype=np.int64)
        next_id = 0
        for j in range(max(len(m) for m in minis)):
            parts = [m[j] for m in minis if j < len(m) and len(m[j])]
            for rows, groups in zip(parts, self._split(parts, seq_lens)):
                for g in groups:
                    ids[rows[g]] = next_id
                    next_id += 1
        return torch.from_numpy(ids), next_id

    def _split(self, parts: list[np.ndarray], seq_lens: Sequence[int] | None) -> list[list[list[int]]]:
        """Each rank's mini-batch rows → micro-batches (positions into that rank's rows)."""
        if self.micro_batch_rows is not None:
            m = self.micro_batch_rows
            return [[list(range(i, min(i + m, len(p)))) for i in range(0, len(p), m)] for p in parts]
        if seq_lens is None:
            raise ValueError("MicroBatchLayout with dynamic batch size needs the rows' sequence lengths")
        from verl.utils.seqlen_balancing import calculate_workload, get_seqlen_balanced_partitions

        lens = [[int(seq_lens[i]) for i in p] for p in parts]
        # veRL's rearrange_micro_batches: the largest count any rank needs, raised until every
        # rank's balanced partition fits the token budget
        num = max(min(len(x), -(-sum(x) // self.max_token_len)) for x in lens)
        while True:
            splits = []
            for x in lens:
                k = min(num, len(x))
                work = calculate_workload(torch.tensor(x, dtype=torch.int64)).tolist()
                splits.append(get_seqlen_balanced_partitions(work, k, equal_size=False))
            fits = all(sum(x[i] for i in g) <= self.max_token_len for x, sp in zip(lens, splits) for g in sp)
            if fits or num >= max(len(x) for x in lens):
                return splits
            num += 1


def group_accuracy(correct: np.ndarray, uids: Sequence[Any]) -> np.ndarray:
    """Each response's prompt accuracy: the mean of ``correct`` over the responses sharing its uid."""
    correct = np.asarray(correct, dtype=np.float64)
    _, inverse = np.unique(np.asarray(uids, dtype=object).astype(str), return_inverse=True)
    sums = np.bincount(inverse, weights=correct)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def check_finite(
    fields: dict[str, Any], response_mask: torch.Tensor, step: int | None = None, rows: Sequence[int] | None = None
) -> None:
    """Raise ``ValueError`` at the first NaN / ±inf in ``fields`` (batch key → values).

    Per-token fields are (B, T), per-response ones (B,); every position is checked, padding
    included (there a non-finite value leaves the loss finite but can make its gradient NaN).
    The message names the field, the step, the row (and dataset row) and token of the first
    bad value, whether that token is valid or padding, and how many values are bad. The
    loss cannot raise (it must not sync with the host); this runs on the driver's host copy
    of the batch before the update, so a bad batch stops the run instead of training on NaN.
    """
    where = "(step unknown)" if step is None else f"at step {step}"
    for name, values in fields.items():
        if values is None:
            continue
        x = torch.as_tensor(np.asarray(values, dtype=np.float64) if not isinstance(values, torch.Tensor) else values)
        if not x.is_floating_point():
            continue  # integer / bool values cannot be NaN or inf
        bad = ~torch.isfinite(x)
        if not bool(bad.any()):
            continue
        flat = int(bad.reshape(-1).int().argmax())
        row, token = divmod(flat, x.shape[-1]) if x.dim() == 2 else (flat, None)
        what = f"row {row}"
        if rows is not None and row < len(rows):
            what += f" (dataset row {rows[row]})"
        if token is not None:
            kind = "a valid response token" if bool(response_mask[row, token] != 0) else "padding"
            what += f", token {token} ({kind})"
        raise ValueError(
            f"entropy-rl {where}: field {name!r} holds {int(bad.sum())} non-finite value(s) of {x.numel()}; "
            f"the first, {x.reshape(-1)[flat].item()}, is at {what}. Training on it would give a NaN loss or "
            "gradient: the run stops here. Look at what produced this field (reward function, advantage "
            "estimator, old-log-prob pass)."
        )


def masked_token_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    m = (mask != 0).to(x.dtype)
    return float((x * m).sum() / torch.clamp(m.sum(), min=1))


class EntropyHooks:
    """State and per-step logic of SENT / AER / the adaptive curriculum for one run."""

    def __init__(self, entropy_rl: Any, sampler: Any = None, layout: MicroBatchLayout | None = None) -> None:
        self.token_kl_enabled = bool(entropy_rl.token_kl.enable)
        self.selection = entropy_rl.token_kl.selection
        self.sent = sent_config(entropy_rl.token_kl)
        # the actor update's micro-batches (None: the whole batch counts as one)
        self.layout = layout
        self.aer_enabled = bool(entropy_rl.aer.enable)
        self.aer = AERController(aer_config(entropy_rl.aer)) if self.aer_enabled else None
        cur = entropy_rl.curriculum
        self.adaptive_curriculum = bool(cur.enable and cur.adaptive)
        self.adaptive_ema = float(cur.adaptive_ema)
        if not 0.0 <= self.adaptive_ema < 1.0:
            raise ValueError(f"entropy_rl.curriculum.adaptive_ema must be in [0, 1), got {self.adaptive_ema}")
        self.sampler = sampler
        # EMA tables for the adaptive curriculum, keyed by dataset row.
        self.se_table: dict[int, float] = {}
        self.acc_table: dict[int, float] = {}

    def on_batch(
        self,
        *,
        entropy: torch.Tensor,
        old_log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        correct: np.ndarray,
        uids: Sequence[Any],
        rows: Sequence[int] | None = None,
        preds: Sequence[str | None] | None = None,
        seq_logprobs: Sequence[float] | None = None,
        seq_lens: Sequence[int] | None = None,
        step: int | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """One training step's entropy logic.

        Args:
            entropy: H_t of the current policy, (B, T), from the old-log-prob pass.
            old_log_prob, advantages, response_mask: the batch's, (B, T).
            correct: per response 1/0 (reward > 0).
            uids: prompt group id per response.
            rows: dataset row per response (adaptive curriculum).
            preds: extracted final answer per response (adaptive curriculum).
            seq_logprobs: log P(o) per response, for the likelihood estimator (optional).
            seq_lens: prompt + response tokens per row (the micro-batch layout under dynamic
                batch size).
            step: the training step, named in errors.

        Returns:
            ``(fields, metrics)``: per-token tensors to attach to the batch, and metrics.

        Raises:
            ValueError: a NaN / ±inf in any input (:func:`check_finite`), before any state
            (AER, EMA tables, sampler) changes.
        """
        check_finite(
            {
                "response_mask": response_mask,
                "entropys": entropy,
                "old_log_probs": old_log_prob,
                "advantages": advantages,
                "acc": correct,
                "rollout_log_probs (sequence sum)": seq_logprobs,
            },
            response_mask,
            step=step,
            rows=rows,
        )
        out: dict[str, torch.Tensor] = {}
        metrics: dict[str, float] = {}
        acc = group_accuracy(correct, uids)
        batch_entropy = masked_token_mean(entropy, response_mask)

        if self.token_kl_enabled:
            groups, n_micro = (
                (None, 1) if self.layout is None else self.layout.micro_batch_ids(response_mask.shape[0], seq_lens)
            )
            _, k_fraction, k_release = cov_counts(entropy, response_mask, self.sent, groups, n_micro)
            # k of this step, and what the release would have selected on the same batch and
            # layout (per micro-batch the worker's own selection uses exactly that rule)
            uses_release = self.selection == "micro" or self.sent.cov_count == "release"
            metrics["sent/high_cov_tokens"] = float(k_release if uses_release else k_fraction)
            metrics["sent/high_cov_tokens_release_equiv"] = float(k_release)
            metrics["sent/micro_batches"] = float(n_micro)

        if self.token_kl_enabled and self.selection == "batch":
            token_set = select_tokens(
                entropy,
                old_log_prob,
                advantages,
                response_mask,
                self.sent,
                micro_batch=groups,
                num_micro_batches=n_micro,
            )
            out[FIELD_TOKEN_SET] = token_set
            valid = response_mask != 0
            n = max(int(valid.sum()), 1)
            metrics["sent/batch_low_entropy_frac"] = int((valid & (token_set != TOKEN_OUTSIDE)).sum()) / n
            metrics["sent/batch_high_cov_frac"] = int((valid & (token_set == TOKEN_HIGH_COV)).sum()) / n
            metrics["sent/batch_low_cov_frac"] = int((valid & (token_set == TOKEN_LOW_COV)).sum()) / n
            metrics["sent/batch_high_cov_tokens"] = float(int((token_set == TOKEN_HIGH_COV).sum()))

        if self.aer is not None:
            metrics.update(self.aer.step(batch_entropy))
            coef = self.aer.token_coefficients(torch.as_tensor(acc), response_mask)
            out[FIELD_ENTROPY_COEF] = coef.to(torch.float32)
            metrics["aer/mean_token_coef"] = masked_token_mean(coef, response_mask)
            # the largest e_t = α_t·w of the step (bounded by α_max·w_max), and how many
            # responses sit at the weight cap: where the cap binds the allocation is changed
            valid = response_mask != 0
            metrics["aer/coef_max"] = float(torch.where(valid, coef, 0.0).max()) if coef.numel() else 0.0
            w = self.aer.prompt_weights(torch.as_tensor(acc))
            metrics["aer/weight_capped_frac"] = float(((w >= self.aer.cfg.w_max) & (w > 0)).float().mean())

        # entropy by difficulty bucket: where does the entropy go?
        per_seq = ((entropy * (response_mask != 0)).sum(-1) / torch.clamp((response_mask != 0).sum(-1), min=1)).numpy()
        for name, lo, hi in _BUCKETS:
            sel = (acc >= lo) & (acc <= hi)
            if sel.any():
                metrics[f"entropy_by_difficulty/{name}"] = float(per_seq[sel].mean())
                metrics[f"entropy_by_difficulty/{name}_frac"] = float(sel.mean())

        if self.adaptive_curriculum:
            if rows is None or preds is None:
                raise ValueError("adaptive curriculum needs dataset rows and extracted answers for every response")
            metrics.update(self._refresh_curriculum(rows, preds, correct, uids, seq_logprobs))
        return out, metrics

    def _refresh_curriculum(self, rows, preds, correct, uids, seq_logprobs) -> dict[str, float]:
        groups: dict[str, list[int]] = {}
        for i, u in enumerate(uids):
            groups.setdefault(str(u), []).append(i)
        lam = self.adaptive_ema
        upd_rows, upd_se, upd_acc, fresh = [], [], [], []
        for members in groups.values():
            row = int(rows[members[0]])
            ids = cluster_answers([preds[i] for i in members])
            lps = None if seq_logprobs is None else [float(seq_logprobs[i]) for i in members]
            h = semantic_entropy(ids, lps)
            a = float(np.mean([correct[i] for i in members]))
            fresh.append(h)
            # EMA around the stored value; the first observation seeds it
            self.se_table[row] = h if row not in self.se_table else lam * self.se_table[row] + (1 - lam) * h
            self.acc_table[row] = a if row not in self.acc_table else lam * self.acc_table[row] + (1 - lam) * a
            upd_rows.append(row)
            upd_se.append(self.se_table[row])
            upd_acc.append(self.acc_table[row])
        if self.sampler is not None:
            self.sampler.update(upd_rows, semantic_entropy=upd_se, accuracy=upd_acc)
        return {"curriculum/rollout_semantic_entropy": float(np.mean(fresh)) if fresh else math.nan}

    def state_dict(self) -> dict[str, Any]:
        return {
            "aer": None if self.aer is None else self.aer.state_dict(),
            "se_table": dict(self.se_table),
            "acc_table": dict(self.acc_table),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state.get("aer") is None) != (self.aer is None):
            raise ValueError("checkpoint and run disagree on entropy_rl.aer.enable; resume with the same method")
        if self.aer is not None:
            self.aer.load_state_dict(state["aer"])
        self.se_table = {int(k): float(v) for k, v in state["se_table"].items()}
        self.acc_table = {int(k): float(v) for k, v in state["acc_table"].items()}


def reward_check_metrics(non_tensor_batch: Any) -> dict[str, float]:
    """Answer checks of this batch that ended without a verdict.

    :func:`entropy_rl.reward.compute_score` returns ``verify_timeouts`` per response (checks
    that hit the deadline or the worker's memory bound and so scored "not equivalent");
    veRL stores reward extras as ``non_tensor_batch`` keys but logs none of them as
    training metrics. Returns ``reward/verify_timeouts`` (sum over the batch) and
    ``reward/verify_timeout_frac`` (share of responses with at least one), or nothing when
    the reward function does not report the key.
    """
    values = non_tensor_batch.get("verify_timeouts") if hasattr(non_tensor_batch, "get") else None
    if values is None or len(values) == 0:
        return {}
    try:
        counts = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"reward extra 'verify_timeouts' must hold numbers, got {np.asarray(values)[:3]!r}..."
        ) from None
    bad = ~np.isfinite(counts) | (counts < 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"reward extra 'verify_timeouts' at batch row {row} is {values[row]!r}: expected a count >= 0")
    return {"reward/verify_timeouts": float(counts.sum()), "reward/verify_timeout_frac": float((counts > 0).mean())}
