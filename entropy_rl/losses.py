"""SENT token-level selective KL-Cov, and the policy loss that carries it (and AER's bonus).

SENT (arXiv 2512.04359) puts a KL penalty on *low-entropy* tokens only, and a stronger one
on the low-entropy tokens whose covariance between log-probability and advantage is
highest — the tokens that, by the entropy mechanism (Cov(logπ, A) drives entropy down),
collapse entropy fastest:

    T_low   = lowest-entropy fraction ``low_entropy_fraction`` of valid tokens
              (or, paper text, {t : H_t < τ_H} when ``tau_h`` is set)
    Cov_t   = (logπ_t − mean_{T_low} logπ) · (A_t − mean_{T_low} A)
    release : top k of T_low by Cov → β_high, bottom k → β_low, the rest 0 (the code that
              produced the paper's tables); the two sets are picked independently and a
              token in both gets β_low (the release writes the low set second), so β_low
              always reaches k tokens and β_high reaches k minus the overlap
    paper   : top k of T_low by Cov → β_high, the rest of T_low → β_low (a partition of
              T_low: the text gives each low-entropy token one coefficient, the stronger one
              to the high-Cov tokens, so here the high set wins)

    k (how many): ``cov_count: fraction`` → max(min_selected, ⌊cov_fraction·|T_low|⌋) over
    the tokens selected from; ``cov_count: release`` → Σ_m max(min_selected,
    ⌊cov_fraction·|T_low,m|⌋) over the micro-batches m the release would have selected in
    (|T_low,m| = the T_low of micro-batch m alone). Per micro-batch the two agree; over a
    whole batch the release's floor makes its count ~one token per micro-batch whatever the
    response length (k = 0.0002 needs |T_low,m| ≥ 10,000 for a second token), so a batch-wide
    selection that should differ from the release only in *which* tokens it picks uses
    ``release``. Ties in Cov are broken by position (first wins) for both sets, where the
    release relied on ``torch.topk``'s unspecified order: equal inputs, equal selection.

    loss_t  = PPO-surrogate_t + c_t · KL_t − e_t · H_t

with ``c_t`` the coefficient above, ``KL_t`` = |logπ − logπ_old| (KL-Cov heritage) or a KL to
the reference policy, and ``e_t`` an optional per-token entropy-bonus coefficient (AER's
α_t · w(prompt), see :mod:`entropy_rl.aer`).

Everything here is sync-free: no ``.item()``, ``.cpu()``, ``.tolist()``, ``nonzero`` or
boolean-mask indexing, and no Python number computed from a tensor. Set sizes such as
``⌊0.8·n_valid⌋`` stay 0-d tensors; selection is a radix select (T_low) and ``topk`` calls
whose sizes come from the shape (the covariance sets), exact as a stable sort with ties by
position, so the same code runs on CUDA (inside a graph), on CPU, and on ``device="meta"``,
where any hidden host sync would raise — that is how the tests prove it. Costs are measured
against veRL's losses by ``bench/bench_loss.py`` (``docs/performance.md``).

The released SENT code indexed tensors with an int64 ``response_mask`` (``adv[mask]``),
gathering rows 0/1 instead of masking. Here a mask of any dtype is only ever compared
with zero.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from verl.trainer.ppo.core_algos import agg_loss, kl_penalty

from entropy_rl.config import KLKind, SentKLConfig  # noqa: F401  (re-exported: the loss's knobs)

# Token-set ids written by :func:`select_tokens` (int8, same shape as the response).
TOKEN_OUTSIDE = 0  # not in T_low (or padding): no KL
TOKEN_LOW = 1  # in T_low, neither extreme of Cov: β_low in `paper` mode, 0 in `release`
TOKEN_LOW_COV = 2  # bottom `cov_fraction` of T_low by Cov (`release` mode: β_low)
TOKEN_HIGH_COV = 3  # top `cov_fraction` of T_low by Cov: β_high
TOKEN_SETS = (TOKEN_OUTSIDE, TOKEN_LOW, TOKEN_LOW_COV, TOKEN_HIGH_COV)

# Metric of :func:`compute_policy_loss`: NaN / ±inf values among its tensor inputs.
NONFINITE_METRIC = "actor/entropy_rl/nonfinite_inputs"


def _valid(mask: torch.Tensor) -> torch.Tensor:
    # Works for bool, int64 and float masks alike; never used as an index.
    return mask != 0


def _ordered_bits(x: torch.Tensor) -> torch.Tensor:
    """An int64 in [0, 2³²) per float32 element, in the same order as the floats.

    The IEEE-754 bit pattern read as an integer is monotone for non-negative floats and
    reversed for negative ones; flipping the magnitude bits of the negatives and offsetting
    by 2³¹ gives one total order. ``x + 0.0`` turns −0.0 into +0.0 so equal floats get equal
    keys (ties are then broken by position by the caller).
    """
    b = (x.float() + 0.0).view(torch.int32)
    b = torch.where(b < 0, b ^ 0x7FFFFFFF, b)
    return b.to(torch.int64) + (1 << 31)


def _position_keys(x: torch.Tensor, descending: bool) -> tuple[torch.Tensor, int]:
    """Unique int64 keys ordering 1-D ``x`` by value, ties by position (first wins).

    ``key = ordered_bits(x) · 2^p + position`` (or ``N − 1 − position`` when the order is
    descending), with p the bits a position needs: every key differs, so "the k smallest
    keys" is exactly the first k of a stable sort. Returns the keys and p.
    """
    n = x.numel()
    pos_bits = max(1, (n - 1).bit_length())
    pos = torch.arange(n, device=x.device)
    if descending:
        pos = (n - 1) - pos
    return _ordered_bits(x) * (1 << pos_bits) + pos, pos_bits


def _first_k(x: torch.Tensor, keep: torch.Tensor, k: torch.Tensor, k_max: int, descending: bool) -> torch.Tensor:
    """Mask of the first ``k`` elements of ``keep`` in a stable sort of 1-D ``x``.

    ``k`` is a 0-d tensor (no host sync); ``k_max`` is a static bound on it computed from the
    shape. One ``topk`` of ``k_max`` unique keys, then a scatter of the first ``k``: far
    cheaper than sorting all N elements when k_max ≪ N (SENT's k is 0.02% of T_low).
    """
    key, _ = _position_keys(x, descending)
    fill = -1 if descending else torch.iinfo(torch.int64).max
    key = torch.where(keep, key, fill)
    k_max = min(k_max, x.numel())
    idx = torch.topk(key, k_max, largest=descending, sorted=True).indices
    take = torch.arange(k_max, device=x.device) < k
    return torch.zeros_like(keep).scatter_(0, idx, take)


def _smallest_k(x: torch.Tensor, keep: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Mask of the ``k`` smallest elements of ``keep`` (ties: first position), any k.

    Radix select on the unique keys of :func:`_position_keys`: a few rounds, each a
    histogram of one digit over the elements still tied on the higher digits (scatter-add
    into ≤ 2¹⁷ bins, a cumulative sum, and a device-side search for the bin holding the
    k-th key). O(N) per round, no sort, no host sync; the k-th key is rebuilt from its
    digits and the result is ``keep & key ≤ kth``.
    """
    key, pos_bits = _position_keys(x, descending=False)
    total_bits = 32 + pos_bits
    rounds = -(-total_bits // 17)
    width = -(-total_bits // rounds)
    bins = 1 << width
    cand = keep
    remaining = k.to(torch.int64)
    kth = torch.zeros((), dtype=torch.int64, device=x.device)
    for r in range(rounds - 1, -1, -1):
        shift = r * width
        digit = key >> shift
        if r < rounds - 1:  # the top digit needs no mask
            digit = digit & (bins - 1)
        hist = torch.zeros(bins, dtype=torch.int32, device=x.device).scatter_add_(0, digit, cand.int())
        csum = hist.cumsum(0)
        b = torch.clamp((csum < remaining).sum(), max=bins - 1)
        below = torch.where(b > 0, csum.gather(0, torch.clamp(b - 1, min=0).reshape(1)).squeeze(0), 0)
        remaining = remaining - below
        kth = kth + (b << shift)
        cand = cand & (digit == b)
    return keep & (key <= kth) & (k > 0)


def _f32_above(x: float) -> float:
    """The smallest float32 ≥ x: for float32 h, ``h < x`` ⟺ ``h < _f32_above(x)``.

    ``h < x`` with a float32 tensor rounds the Python float x to the *nearest* float32, which
    would put a token with H_t just below τ_H on the wrong side when τ_H itself is not a float32.
    """
    with np.errstate(over="ignore"):  # |x| > float32 max rounds to ±inf, then steps back
        f = np.float32(x)
    if float(f) < x:  # compared in float64 (NumPy 2 would compare a Python float as float32)
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


def _count_fraction(n: torch.Tensor, fraction: float, minimum: int) -> torch.Tensor:
    """⌊fraction·n⌋, at least ``minimum``, at most n — as a 0-d int64 tensor."""
    k = torch.floor(n.to(torch.float64) * fraction).to(torch.int64)
    return torch.minimum(torch.clamp(k, min=minimum), n)


def _group_sums(row_values: torch.Tensor, micro_batch: torch.Tensor | None, num_micro_batches: int) -> torch.Tensor:
    """Per-micro-batch sums of a per-row (B,) tensor, (num_micro_batches,); one group if no layout."""
    if micro_batch is None:
        return row_values.sum().reshape(1)
    out = torch.zeros(num_micro_batches, dtype=row_values.dtype, device=row_values.device)
    return out.scatter_add_(0, micro_batch.to(device=row_values.device, dtype=torch.int64).reshape(-1), row_values)


def cov_counts(
    entropy: torch.Tensor,
    response_mask: torch.Tensor,
    cfg: SentKLConfig,
    micro_batch: torch.Tensor | None = None,
    num_micro_batches: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """|T_low| and the two count rules for k, as 0-d int64 tensors (no host sync).

    Args:
        entropy: H_t, (B, T) (read only when ``tau_h`` is set).
        response_mask: valid-token mask of any dtype, (B, T).
        cfg: ``low_entropy_fraction`` / ``tau_h``, ``cov_fraction`` (k), ``min_selected``.
        micro_batch: (B,) id in ``[0, num_micro_batches)`` of the micro-batch each row is
            trained in; ``None``: the rows are one micro-batch.

    Returns:
        ``(n_low, k_fraction, k_release)``: |T_low| over all rows; max(min_selected,
        ⌊k·|T_low|⌋); Σ_m max(min_selected, ⌊k·|T_low,m|⌋) over the micro-batches with a valid
        token, where T_low,m is the T_low micro-batch m would have on its own. Both k are at
        most |T_low|.
    """
    valid = _valid(response_mask).reshape(response_mask.shape[0], -1)
    if cfg.tau_h is None:
        n_valid = valid.sum()
        n_low = _count_fraction(n_valid, cfg.low_entropy_fraction, minimum=1)
        n_valid_m = _group_sums(valid.sum(-1), micro_batch, num_micro_batches)
        n_low_m = _count_fraction(n_valid_m, cfg.low_entropy_fraction, minimum=1)
    else:
        h = entropy.detach().float().reshape(valid.shape)
        low_rows = (valid & (h < _f32_above(cfg.tau_h))).sum(-1)
        n_low = low_rows.sum()
        n_low_m = _group_sums(low_rows, micro_batch, num_micro_batches)
    k_fraction = _count_fraction(n_low, cfg.cov_fraction, minimum=cfg.min_selected)
    k_m = torch.where(n_low_m > 0, _count_fraction(n_low_m, cfg.cov_fraction, minimum=cfg.min_selected), 0)
    k_release = torch.minimum(k_m.sum(), n_low)
    return n_low, k_fraction, k_release


def select_tokens(
    entropy: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    cfg: SentKLConfig,
    *,
    micro_batch: torch.Tensor | None = None,
    num_micro_batches: int = 1,
) -> torch.Tensor:
    """Assign every token to a SENT token set (TOKEN_* ids, int8, same shape as inputs).

    Args:
        entropy: H_t, token entropy of the policy, (B, T).
        log_prob: logπ_t of the sampled token, (B, T). Detached here.
        advantages: A_t, (B, T).
        response_mask: valid-token mask of any dtype (bool / int64 / float), (B, T).
        cfg: the selection knobs.
        micro_batch, num_micro_batches: the micro-batch of each row, for ``cov_count:
            release`` over a batch of several micro-batches (:func:`cov_counts`); ``None``:
            the rows are one micro-batch (the release's own case), where both rules agree.

    Returns:
        int8 tensor: TOKEN_OUTSIDE (also all padding), TOKEN_LOW, TOKEN_LOW_COV, TOKEN_HIGH_COV.
        Where the top-k and bottom-k sets share a token (|T_low| < 2·k, or Cov ties across
        T_low, e.g. A ≡ 0): ``release`` mode gives it TOKEN_LOW_COV (β_low, the release's
        rule); ``paper`` mode has no bottom set, the top k get β_high and the rest β_low.

    Every set is exactly "the first n of a stable sort" (ties by position, i.e. the
    float64 reference in the tests), computed without sorting: T_low by radix select,
    the covariance sets by a ``topk`` bounded by the shape (k ≤ num_micro_batches ·
    min_selected + ⌊cov_fraction·numel⌋). Inputs of any float dtype are compared as float32
    (exact for bf16/fp16, so a bf16 batch selects what its float32 copy selects). Padding
    values, whatever they are (NaN included), never change the result.
    """
    shape = entropy.shape
    h = entropy.detach().reshape(-1).float()
    logp = log_prob.detach().reshape(-1).float()
    adv = advantages.detach().reshape(-1).float()
    valid = _valid(response_mask).reshape(-1)

    n_low, k_fraction, k_release = cov_counts(entropy, response_mask, cfg, micro_batch, num_micro_batches)
    if cfg.tau_h is None:
        low = _smallest_k(h, valid, n_low)
    else:
        low = valid & (h < _f32_above(cfg.tau_h))

    # Means over T_low by `where`, not `* low`: 0·NaN = NaN, so a non-finite value outside
    # T_low (padding included) would otherwise poison every token's Cov.
    denom = torch.clamp(n_low, min=1).float()
    cov = (logp - torch.where(low, logp, 0.0).sum() / denom) * (adv - torch.where(low, adv, 0.0).sum() / denom)

    k = k_release if cfg.cov_count == "release" else k_fraction
    groups = num_micro_batches if (cfg.cov_count == "release" and micro_batch is not None) else 1
    k_max = groups * max(cfg.min_selected, 1) + math.floor(h.numel() * cfg.cov_fraction) + 1
    # k <= |T_low|, so the first k of T_low are all in T_low
    high = _first_k(cov, low, k, k_max, descending=True)

    token_set = torch.full_like(low, TOKEN_OUTSIDE, dtype=torch.int8).masked_fill_(low, TOKEN_LOW)
    token_set.masked_fill_(high, TOKEN_HIGH_COV)
    if cfg.mode == "release":
        # picked independently of the high set and written after it, as the release does
        bottom = _first_k(cov, low, k, k_max, descending=False)
        token_set.masked_fill_(bottom, TOKEN_LOW_COV)
    return token_set.reshape(shape)


_TABLES: dict[tuple, torch.Tensor] = {}


def _coefficient_table(cfg: SentKLConfig, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The 4-entry coefficient table, built once per (config, dtype, device).

    Filled on the device from Python scalars: ``torch.tensor(list, device="cuda")`` would be
    a pageable host-to-device copy, i.e. a sync (and illegal inside CUDA-graph capture). A
    table built during capture is not cached: its fills only run when the graph replays.
    """
    key = (cfg, dtype, device)
    table = _TABLES.get(key)
    if table is None:
        table = torch.zeros(len(TOKEN_SETS), dtype=dtype, device=device)
        for i, value in enumerate(cfg.coefficient_table()):
            if value:
                table[i] = value
        if not (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
            _TABLES[key] = table
    return table


def kl_coefficients(token_set: torch.Tensor, cfg: SentKLConfig, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-token KL coefficient c_t from token-set ids (a device-side table lookup)."""
    return _lookup(_coefficient_table(cfg, dtype, token_set.device), token_set)


def _lookup(table: torch.Tensor, token_set: torch.Tensor) -> torch.Tensor:
    # index_select with int32 ids: on CPU ~5x cheaper than table[token_set.long()]
    return table.index_select(0, token_set.reshape(-1).int()).view(token_set.shape)


def _sum_by_set(token_set: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over the tokens of each set, a (len(TOKEN_SETS),) tensor."""
    ids = token_set.reshape(-1)
    if ids.device.type == "cpu":
        # bincount is the cheapest histogram on CPU; on CUDA it syncs (it sizes its output
        # from the max), so other devices scatter-add into fixed bins instead.
        return torch.bincount(ids, weights=values.reshape(-1), minlength=len(TOKEN_SETS)).to(values.dtype)
    out = torch.zeros(len(TOKEN_SETS), dtype=values.dtype, device=values.device)
    return out.scatter_add_(0, ids.long(), values.reshape(-1))


def sent_kl_coefficients(
    entropy: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    cfg: SentKLConfig,
) -> torch.Tensor:
    """c_t for every token: β_high / β_low / 0 as SENT prescribes (0 outside T_low and on padding)."""
    return kl_coefficients(select_tokens(entropy, log_prob, advantages, response_mask, cfg), cfg)


def compute_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    cfg: SentKLConfig,
    *,
    token_set: torch.Tensor | None = None,
    ref_log_prob: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    entropy_coef: torch.Tensor | float | None = None,
    rollout_is_weights: torch.Tensor | None = None,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    global_batch_info: dict | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO surrogate + SENT selective KL + optional per-token entropy bonus, aggregated by veRL.

    Args:
        old_log_prob, log_prob, advantages, response_mask: as veRL's policy losses, (B, T).
        cfg: SENT knobs (``kl`` kind, ``clip``, coefficients).
        token_set: TOKEN_* ids from :func:`select_tokens` — computed once over the whole
            training batch by the recipe (``selection: batch``), or per micro-batch by the
            caller (``selection: micro``, the release). ``None``: no KL term (plain PPO).
        ref_log_prob: logπ_ref, required when ``cfg.kl`` is not ``"abs"``.
        entropy: H_t, required when ``entropy_coef`` is given.
        entropy_coef: e_t, per-token (B, T) or scalar bonus coefficient (AER: α_t·w(prompt)).
        rollout_is_weights: veRL's rollout-correction weights, multiplied into the surrogate.
        clip_ratio_low/high/c: PPO ε_low, ε_high and the dual-clip bound (veRL's ``vanilla``).
        loss_agg_mode, global_batch_info: passed to veRL's ``agg_loss`` so the loss scale is
            right for any micro-batch / data-parallel layout.

    Returns:
        ``(loss, metrics)``; every metric is a 0-d tensor (veRL syncs them once).
        ``NONFINITE_METRIC`` counts the tensor inputs this call reads that hold a NaN or ±inf
        anywhere (padding included: there a non-finite value leaves the loss finite but can
        make the gradient NaN), so a bad micro-batch shows in the logs without a host sync
        here; the driver rejects such batches before the update, naming field, row and token
        (:func:`recipe.sent.hooks.check_finite`).

    A micro-batch with no valid token gives loss 0, finite metrics and a zero gradient: the
    local token / sequence counts veRL would divide by are taken as at least 1.
    """
    # A bool loss mask, as veRL's own ppo_loss passes (agg_loss then converts nothing);
    # metrics reuse one float mask and one token count.
    valid = response_mask if response_mask.dtype == torch.bool else _valid(response_mask)
    mask = valid.to(log_prob.dtype)
    n_valid = torch.clamp(mask.sum(), min=1.0)
    row_count = mask.sum(-1)
    gbi = _safe_counts(global_batch_info or {}, n_valid, row_count, loss_agg_mode)

    # Clipped surrogate (with veRL's dual clip), or −A·ratio as in the release.
    diff = log_prob - old_log_prob
    neg_kl = torch.clamp(diff, min=-20.0, max=20.0)
    ratio = torch.exp(neg_kl)
    pg1 = -advantages * ratio
    if cfg.clip:
        pg2 = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
        clipped = torch.maximum(pg1, pg2)
        pg = torch.where(advantages < 0, torch.minimum(-advantages * clip_ratio_c, clipped), clipped)
        clipfrac = ((pg2 > pg1) & valid).sum() / n_valid
    else:
        pg = pg1
        clipfrac = torch.zeros((), device=log_prob.device)
    if rollout_is_weights is not None:
        pg = pg * rollout_is_weights

    def agg(loss_mat: torch.Tensor) -> torch.Tensor:
        return agg_loss(loss_mat=loss_mat, loss_mask=valid, loss_agg_mode=loss_agg_mode, **gbi)

    # One aggregation carries the gradient of every term (agg_loss is linear in loss_mat, so
    # this equals the sum of the terms' aggregates); each extra term's own aggregate is a
    # metric computed without autograd, and the surrogate's is what remains.
    loss_mat = pg
    terms: dict[str, tuple[torch.Tensor, float]] = {}  # metric name -> (term, sign in the loss)
    metrics: dict[str, torch.Tensor] = {
        "actor/pg_clipfrac": clipfrac.detach(),
        "actor/ppo_kl": -(neg_kl.detach() * mask).sum() / n_valid,
    }

    if token_set is not None:
        if cfg.kl == "abs":
            kl = diff.abs()
        else:
            if ref_log_prob is None:
                raise ValueError(f"SentKLConfig.kl={cfg.kl!r} needs ref_log_prob (enable the reference policy)")
            kl = kl_penalty(log_prob, ref_log_prob, cfg.kl)
        kl_term = _lookup(_coefficient_table(cfg, log_prob.dtype, log_prob.device), token_set) * kl
        loss_mat = loss_mat + kl_term
        terms["sent/kl_loss"] = (kl_term, 1.0)
        # Token count and KL sum of every set (padding adds zeros).
        by_set = torch.stack([_sum_by_set(token_set, mask), _sum_by_set(token_set, kl.detach() * mask)])
        # columns: T_low (all of sets 1-3), low-cov set, high-cov set; rows: count, KL sum
        cols = torch.cat([by_set[:, TOKEN_LOW:].sum(1, keepdim=True), by_set[:, TOKEN_LOW_COV:]], dim=1)
        frac = cols[0] / n_valid
        mean_kl = cols[1] / torch.clamp(cols[0], min=1.0)
        metrics.update(
            {
                "sent/low_entropy_frac": frac[0],
                "sent/low_cov_frac": frac[1],
                "sent/high_cov_frac": frac[2],
                "sent/kl_low_entropy": mean_kl[0],
                "sent/kl_low_cov": mean_kl[1],
                "sent/kl_high_cov": mean_kl[2],
            }
        )

    if entropy_coef is not None:
        if entropy is None:
            raise ValueError("compute_policy_loss: entropy_coef given but no entropy (enable calculate_entropy)")
        bonus_term = entropy_coef * entropy
        loss_mat = loss_mat - bonus_term
        terms["aer/entropy_bonus"] = (bonus_term, -1.0)

    loss = agg(loss_mat)
    with torch.no_grad():
        # Inputs holding a NaN / ±inf: a tensor's sum is non-finite iff one of its values is
        # (or the sum overflows, |Σ| > 3.4e38, itself a broken batch). One reduction per
        # input: ~1% of the loss on CPU, where an isfinite count costs ~25%.
        inputs = [old_log_prob, log_prob, advantages, rollout_is_weights]
        if token_set is not None and cfg.kl != "abs":
            inputs.append(ref_log_prob)
        if entropy_coef is not None:
            inputs += [entropy, entropy_coef]
        sums = [x.sum().float() for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point()]
        metrics[NONFINITE_METRIC] = (~torch.isfinite(torch.stack(sums))).sum().float()
        # the surrogate's aggregate is the rest (agg_loss is linear; the bonus enters negated)
        pg_loss = loss.detach()
        for name, (term, sign) in terms.items():
            metrics[name] = _agg_from_rows((term * mask).sum(-1), row_count, loss_agg_mode, mask.shape[-1], gbi)
            pg_loss = pg_loss - sign * metrics[name]
        metrics["actor/pg_loss"] = pg_loss
    return loss, metrics


def _at_least_one(n: torch.Tensor | int | float) -> torch.Tensor | int | float:
    return torch.clamp(n, min=1) if isinstance(n, torch.Tensor) else max(n, 1)


def _safe_counts(gbi: dict, n_valid: torch.Tensor, row_count: torch.Tensor, loss_agg_mode: str) -> dict:
    """``global_batch_info`` whose token / sequence counts are never 0 (0/0 would be a NaN loss).

    On one rank the local counts fill in what the caller left out (``agg_loss`` would use them
    unclamped); with ``dp_size > 1`` a missing count stays missing, so veRL's own error for it
    still fires. Non-zero counts are unchanged, so the loss equals ``agg_loss`` whenever a
    micro-batch has a valid token.
    """
    out = dict(gbi)
    for key in ("batch_num_tokens", "global_batch_size"):
        if out.get(key) is not None:
            out[key] = _at_least_one(out[key])
    if out.get("dp_size", 1) == 1:
        if out.get("batch_num_tokens") is None and loss_agg_mode == "token-mean":
            out["batch_num_tokens"] = n_valid
        if out.get("global_batch_size") is None and loss_agg_mode.startswith("seq-mean"):
            out["global_batch_size"] = torch.clamp((row_count > 0).sum(), min=1).to(row_count.dtype)
    return out


def _agg_from_rows(
    row_sum: torch.Tensor, row_count: torch.Tensor, loss_agg_mode: str, horizon: int, gbi: dict
) -> torch.Tensor:
    """veRL's ``agg_loss`` from per-sequence masked sums and token counts (for metrics).

    ``agg_loss`` is linear in the loss matrix and only ever reduces it per sequence or over
    everything, so the per-row sums (one multiply-and-sum on a float mask) determine it;
    tests check this equals ``agg_loss`` for every mode. Costs a fraction of a full
    ``agg_loss`` call (whose ``where`` guard dominates on CPU).
    """
    dp_size = gbi.get("dp_size", 1)
    if loss_agg_mode == "token-mean":
        n = gbi.get("batch_num_tokens")
        return row_sum.sum() / (row_count.sum() if n is None else n) * dp_size
    if loss_agg_mode == "token-sum":
        return row_sum.sum() * dp_size
    seq_mask = (row_count > 0).to(row_sum.dtype)
    n_seq = gbi.get("global_batch_size")
    n_seq = seq_mask.sum() if n_seq is None else n_seq
    if loss_agg_mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        out = (row_sum * seq_mask).sum() / n_seq * dp_size
        if loss_agg_mode == "seq-mean-token-sum-norm":
            scale = gbi.get("loss_scale_factor")
            out = out / (horizon if scale is None else scale)
        return out
    if loss_agg_mode == "seq-mean-token-mean":
        return (row_sum / (row_count + 1e-8) * seq_mask).sum() / n_seq * dp_size
    raise ValueError(f"Invalid loss_agg_mode: {loss_agg_mode}")
