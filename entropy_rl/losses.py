"""SENT token-level selective KL-Cov, and the policy loss that carries it (and AER's bonus).

SENT (arXiv 2512.04359) puts a KL penalty on *low-entropy* tokens only, and a stronger one
on the low-entropy tokens whose covariance between log-probability and advantage is
highest — the tokens that, by the entropy mechanism (Cov(logπ, A) drives entropy down),
collapse entropy fastest:

    T_low   = lowest-entropy fraction ``low_entropy_fraction`` of valid tokens
              (or, paper text, {t : H_t < τ_H} when ``tau_h`` is set)
    Cov_t   = (logπ_t − mean_{T_low} logπ) · (A_t − mean_{T_low} A)
    release : top ``cov_fraction`` of T_low by Cov → β_high, bottom ``cov_fraction`` → β_low,
              the rest 0                       (the code that produced the paper's tables)
    paper   : top ``cov_fraction`` of T_low by Cov → β_high, the rest of T_low → β_low

    loss_t  = PPO-surrogate_t + c_t · KL_t − e_t · H_t

with ``c_t`` the coefficient above, ``KL_t`` = |logπ − logπ_old| (KL-Cov heritage) or a KL to
the reference policy, and ``e_t`` an optional per-token entropy-bonus coefficient (AER's
α_t · w(prompt), see :mod:`entropy_rl.aer`).

Everything here is sync-free: no ``.item()``, ``.cpu()``, ``.tolist()``, ``nonzero`` or
boolean-mask indexing, and no Python number computed from a tensor. Set sizes such as
``⌊0.8·n_valid⌋`` stay 0-d tensors; selection is a stable sort plus a device-side rank, so
the same code runs on CUDA (inside a graph), on CPU, and on ``device="meta"``, where any
hidden host sync would raise — that is how the tests prove it.

The released SENT code indexed tensors with an int64 ``response_mask`` (``adv[mask]``),
gathering rows 0/1 instead of masking. Here a mask of any dtype is only ever compared
with zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from verl.trainer.ppo.core_algos import agg_loss, kl_penalty

# Token-set ids written by :func:`select_tokens` (int8, same shape as the response).
TOKEN_OUTSIDE = 0  # not in T_low (or padding): no KL
TOKEN_LOW = 1  # in T_low, neither extreme of Cov: β_low in `paper` mode, 0 in `release`
TOKEN_LOW_COV = 2  # bottom `cov_fraction` of T_low by Cov (`release` mode: β_low)
TOKEN_HIGH_COV = 3  # top `cov_fraction` of T_low by Cov: β_high

KLKind = Literal["abs", "k1", "low_var_kl", "k2", "k3", "mse", "kl"]


@dataclass(frozen=True)
class SentKLConfig:
    """Knobs of SENT's token-level selective KL-Cov (defaults: the released code).

    Attributes:
        mode: ``"release"`` (top/bottom ``cov_fraction`` of T_low get β_high/β_low, others 0)
            or ``"paper"`` (top ``cov_fraction`` of T_low get β_high, the rest of T_low β_low).
        low_entropy_fraction: share of valid tokens forming T_low, lowest entropy first (0.8).
        tau_h: τ_H. When set, T_low = {t : H_t < τ_H} (paper text) instead of the fraction.
        cov_fraction: k, share of T_low selected by covariance (release 0.0002 = kl_cov_ratio).
        beta_high: β_high, KL coefficient of high-covariance tokens (release 2×0.1 = 0.2).
        beta_low: β_low, KL coefficient of the low-covariance / rest set (release 0.5×0.1 = 0.05).
        min_selected: at least this many tokens in each covariance set (release: 1).
        kl: ``"abs"`` = |logπ − logπ_old| (KL-Cov heritage, release) or a veRL ``kl_penalty``
            kind (``"k1"``, ``"low_var_kl"``, ...) against the reference policy (paper text).
        clip: PPO clipping of the surrogate; ``False`` reproduces the release (plain −A·ratio).
    """

    mode: Literal["release", "paper"] = "release"
    low_entropy_fraction: float = 0.8
    tau_h: float | None = None
    cov_fraction: float = 2e-4
    beta_high: float = 0.2
    beta_low: float = 0.05
    min_selected: int = 1
    kl: KLKind = "abs"
    clip: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("release", "paper"):
            raise ValueError(f"SentKLConfig.mode must be 'release' or 'paper', got {self.mode!r}")
        if not 0.0 < self.low_entropy_fraction <= 1.0:
            raise ValueError(f"SentKLConfig.low_entropy_fraction must be in (0, 1], got {self.low_entropy_fraction}")
        if not 0.0 <= self.cov_fraction <= 1.0:
            raise ValueError(f"SentKLConfig.cov_fraction must be in [0, 1], got {self.cov_fraction}")
        if self.beta_high < 0 or self.beta_low < 0:
            raise ValueError(f"SentKLConfig: β_high, β_low must be >= 0, got {self.beta_high}, {self.beta_low}")
        if self.min_selected < 0:
            raise ValueError(f"SentKLConfig.min_selected must be >= 0, got {self.min_selected}")

    def coefficient_table(self) -> tuple[float, float, float, float]:
        """KL coefficient of each token set, indexed by the TOKEN_* ids."""
        rest = self.beta_low if self.mode == "paper" else 0.0
        low_cov = self.beta_low  # in paper mode no token gets TOKEN_LOW_COV
        return (0.0, rest, low_cov, self.beta_high)


def _valid(mask: torch.Tensor) -> torch.Tensor:
    # Works for bool, int64 and float masks alike; never used as an index.
    return mask != 0


def _rank(key: torch.Tensor, keep: torch.Tensor, descending: bool) -> torch.Tensor:
    """Rank (0 = first) of every element of 1-D ``key`` among the ``keep`` ones.

    Elements outside ``keep`` are pushed past every kept one. Ties resolve by position
    (stable sort), so a selection is deterministic. Sort + scatter: no host sync.
    """
    fill = float("-inf") if descending else float("inf")
    order = torch.argsort(torch.where(keep, key, fill), descending=descending, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(order.numel(), device=order.device))
    return rank


def _count_fraction(n: torch.Tensor, fraction: float, minimum: int) -> torch.Tensor:
    """⌊fraction·n⌋, at least ``minimum``, at most n — as a 0-d int64 tensor."""
    k = torch.floor(n.to(torch.float64) * fraction).to(torch.int64)
    return torch.minimum(torch.clamp(k, min=minimum), n)


def select_tokens(
    entropy: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    cfg: SentKLConfig,
) -> torch.Tensor:
    """Assign every token to a SENT token set (TOKEN_* ids, int8, same shape as inputs).

    Args:
        entropy: H_t, token entropy of the policy, (B, T).
        log_prob: logπ_t of the sampled token, (B, T). Detached here.
        advantages: A_t, (B, T).
        response_mask: valid-token mask of any dtype (bool / int64 / float), (B, T).
        cfg: the selection knobs.

    Returns:
        int8 tensor: TOKEN_OUTSIDE (also all padding), TOKEN_LOW, TOKEN_LOW_COV, TOKEN_HIGH_COV.
        Where the covariance sets overlap (|T_low| < 2·k) the high set wins.
    """
    shape = entropy.shape
    h = entropy.detach().reshape(-1).float()
    logp = log_prob.detach().reshape(-1).float()
    adv = advantages.detach().reshape(-1).float()
    valid = _valid(response_mask).reshape(-1)

    if cfg.tau_h is None:
        n_valid = valid.sum()
        n_low = _count_fraction(n_valid, cfg.low_entropy_fraction, minimum=1)
        low = valid & (_rank(h, valid, descending=False) < n_low)
    else:
        low = valid & (h < cfg.tau_h)
        n_low = low.sum()

    lowf = low.float()
    denom = torch.clamp(n_low, min=1).float()
    cov = (logp - (logp * lowf).sum() / denom) * (adv - (adv * lowf).sum() / denom)

    k = _count_fraction(n_low, cfg.cov_fraction, minimum=cfg.min_selected)
    high = low & (_rank(cov, low, descending=True) < k)

    token_set = torch.where(low, TOKEN_LOW, TOKEN_OUTSIDE).to(torch.int8)
    if cfg.mode == "release":
        bottom = low & ~high & (_rank(cov, low, descending=False) < k)
        token_set = torch.where(bottom, TOKEN_LOW_COV, token_set)
    token_set = torch.where(high, TOKEN_HIGH_COV, token_set).to(torch.int8)
    return token_set.reshape(shape)


def kl_coefficients(token_set: torch.Tensor, cfg: SentKLConfig, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-token KL coefficient c_t from token-set ids (a device-side table lookup)."""
    table = torch.tensor(cfg.coefficient_table(), dtype=dtype, device=token_set.device)
    return table[token_set.long()]


def sent_kl_coefficients(
    entropy: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    cfg: SentKLConfig,
) -> torch.Tensor:
    """c_t for every token: β_high / β_low / 0 as SENT prescribes (0 outside T_low and on padding)."""
    return kl_coefficients(select_tokens(entropy, log_prob, advantages, response_mask, cfg), cfg)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # 0 (not NaN) for an empty set, so metrics stay finite without a host-side check.
    m = mask.to(x.dtype)
    return (x * m).sum() / torch.clamp(m.sum(), min=1.0)


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
    """
    gbi = global_batch_info or {}
    valid = _valid(response_mask)
    mask = valid.to(log_prob.dtype)

    # Clipped surrogate (with veRL's dual clip), or −A·ratio as in the release.
    neg_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(neg_kl)
    pg1 = -advantages * ratio
    if cfg.clip:
        pg2 = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
        clipped = torch.maximum(pg1, pg2)
        pg = torch.where(advantages < 0, torch.minimum(-advantages * clip_ratio_c, clipped), clipped)
        clipfrac = _masked_mean((pg2 > pg1).float(), valid)
    else:
        pg = pg1
        clipfrac = torch.zeros((), device=log_prob.device)
    if rollout_is_weights is not None:
        pg = pg * rollout_is_weights

    metrics: dict[str, torch.Tensor] = {
        "actor/pg_clipfrac": clipfrac.detach(),
        "actor/ppo_kl": _masked_mean(-neg_kl.detach(), valid),
    }
    pg_loss = agg_loss(loss_mat=pg, loss_mask=mask, loss_agg_mode=loss_agg_mode, **gbi)
    loss = pg_loss
    metrics["actor/pg_loss"] = pg_loss.detach()

    if token_set is not None:
        if cfg.kl == "abs":
            kl = (log_prob - old_log_prob).abs()
        else:
            if ref_log_prob is None:
                raise ValueError(f"SentKLConfig.kl={cfg.kl!r} needs ref_log_prob (enable the reference policy)")
            kl = kl_penalty(log_prob, ref_log_prob, cfg.kl)
        coef = kl_coefficients(token_set, cfg, dtype=log_prob.dtype)
        kl_loss = agg_loss(loss_mat=coef * kl, loss_mask=mask, loss_agg_mode=loss_agg_mode, **gbi)
        loss = loss + kl_loss
        kl_d = kl.detach()
        high = valid & (token_set == TOKEN_HIGH_COV)
        low_cov = valid & (token_set == TOKEN_LOW_COV)
        in_low = valid & (token_set != TOKEN_OUTSIDE)
        n_valid = torch.clamp(mask.sum(), min=1.0)
        metrics.update(
            {
                "sent/kl_loss": kl_loss.detach(),
                "sent/low_entropy_frac": in_low.sum() / n_valid,
                "sent/high_cov_frac": high.sum() / n_valid,
                "sent/low_cov_frac": low_cov.sum() / n_valid,
                "sent/kl_low_entropy": _masked_mean(kl_d, in_low),
                "sent/kl_high_cov": _masked_mean(kl_d, high),
                "sent/kl_low_cov": _masked_mean(kl_d, low_cov),
            }
        )

    if entropy_coef is not None:
        if entropy is None:
            raise ValueError("compute_policy_loss: entropy_coef given but no entropy (enable calculate_entropy)")
        bonus = agg_loss(loss_mat=entropy_coef * entropy, loss_mask=mask, loss_agg_mode=loss_agg_mode, **gbi)
        loss = loss - bonus
        metrics["aer/entropy_bonus"] = bonus.detach()

    return loss, metrics
