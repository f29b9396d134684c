"""The knobs of the library's algorithms, as frozen dataclasses: one home, importable without
torch or veRL (``python -m recipe.sent.main --help`` and the config checks read them in well
under a second). Each algorithm's module re-exports its own: :class:`SentKLConfig` from
``entropy_rl.losses``, :class:`AERConfig` from ``entropy_rl.aer``, :class:`CurriculumConfig`
from ``entropy_rl.curriculum``; the math behind every default is documented there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

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
        cov_count: ``"release"`` (Σ over micro-batches of max(min_selected, ⌊k·|T_low,m|⌋), the
            number the release selects) or ``"fraction"`` (max(min_selected, ⌊k·|T_low|⌋) over
            all the tokens selected from at once).
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
    cov_count: Literal["release", "fraction"] = "release"
    beta_high: float = 0.2
    beta_low: float = 0.05
    min_selected: int = 1
    kl: KLKind = "abs"
    clip: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("release", "paper"):
            raise ValueError(f"SentKLConfig.mode must be 'release' or 'paper', got {self.mode!r}")
        if self.cov_count not in ("release", "fraction"):
            raise ValueError(f"SentKLConfig.cov_count must be 'release' or 'fraction', got {self.cov_count!r}")
        if not 0.0 < self.low_entropy_fraction <= 1.0:
            raise ValueError(f"SentKLConfig.low_entropy_fraction must be in (0, 1], got {self.low_entropy_fraction}")
        if not 0.0 <= self.cov_fraction <= 1.0:
            raise ValueError(f"SentKLConfig.cov_fraction must be in [0, 1], got {self.cov_fraction}")
        if self.beta_high < 0 or self.beta_low < 0:
            raise ValueError(f"SentKLConfig: β_high, β_low must be >= 0, got {self.beta_high}, {self.beta_low}")
        if self.tau_h is not None and math.isnan(self.tau_h):
            raise ValueError("SentKLConfig.tau_h (τ_H) must be a number or None, got nan")
        if self.min_selected < 0:
            raise ValueError(f"SentKLConfig.min_selected must be >= 0, got {self.min_selected}")

    def coefficient_table(self) -> tuple[float, float, float, float]:
        """KL coefficient of each token set, indexed by the TOKEN_* ids."""
        rest = self.beta_low if self.mode == "paper" else 0.0
        low_cov = self.beta_low  # in paper mode no token gets TOKEN_LOW_COV
        return (0.0, rest, low_cov, self.beta_high)


@dataclass(frozen=True)
class AERConfig:
    """Knobs of AER, each with its paper symbol.

    Attributes:
        allocation: ``"linear"`` | ``"threshold"`` | ``"none"`` — difficulty-aware w(acc).
        hard_accuracy: τ, accuracy below which a prompt counts as hard (``threshold`` allocation).
        normalize_weights: rescale w to mean 1 over the batch's responses.
        anchor: H* = ρ·H₀ (True) or H* = ``target_entropy`` (False).
        rho: ρ ∈ (0, 1), target ratio to the initial entropy.
        anchor_steps: number of first updates whose mean entropy is H₀.
        target_entropy: absolute H* in nats, used when ``anchor`` is False.
        adaptive: move α_t every step (True) or keep α_t = α_init (False).
        alpha_init: α_0.
        integral_gain: η, integral gain (α per nat of entropy error per step).
        proportional_gain: κ, proportional gain (α per nat of entropy error).
        alpha_min, alpha_max: bounds of α_t.
        w_max: cap on every prompt weight w (after normalisation), so α_t·w ≤ α_max·w_max.
        entropy_smoothing: λ, smoothing of the measured entropy (0 = none).
        controller: ``"pi_nat"`` (η, κ per nat of error) | ``"relative"`` (κ_I, κ_P, κ_D per
            unit of relative error, see the module docstring).
        rel_integral_gain: κ_I, integral step in α_max per unit of relative error (relative).
        rel_proportional_gain: κ_P, α_max per unit of relative error (relative).
        rel_damping_gain: κ_D, α_max per unit of relative entropy slope (relative).
        max_alpha_step: Δα_max, the largest change of α_t per step as a fraction of α_max
            (relative).
    """

    allocation: Literal["linear", "threshold", "none"] = "linear"
    hard_accuracy: float = 0.4
    normalize_weights: bool = True
    anchor: bool = True
    rho: float = 0.6
    anchor_steps: int = 3
    target_entropy: float | None = None
    adaptive: bool = True
    alpha_init: float = 0.0
    integral_gain: float = 0.1
    proportional_gain: float = 0.2
    alpha_min: float = 0.0
    alpha_max: float = 0.1
    w_max: float = 4.0
    entropy_smoothing: float = 0.5
    controller: Literal["pi_nat", "relative"] = "pi_nat"
    rel_integral_gain: float = 0.02
    rel_proportional_gain: float = 0.5
    rel_damping_gain: float = 1.0
    max_alpha_step: float = 0.1

    def __post_init__(self) -> None:
        if self.allocation not in ("linear", "threshold", "none"):
            raise ValueError(f"AERConfig.allocation must be linear|threshold|none, got {self.allocation!r}")
        if self.anchor and not 0.0 < self.rho < 1.0:
            raise ValueError(f"AERConfig.rho (ρ) must be in (0, 1), got {self.rho}")
        if self.anchor and self.anchor_steps < 1:
            raise ValueError(f"AERConfig.anchor_steps must be >= 1, got {self.anchor_steps}")
        if not self.anchor and (self.target_entropy is None or self.target_entropy < 0):
            raise ValueError("AERConfig.anchor=False needs target_entropy (H*, nats) >= 0")
        if not 0.0 <= self.alpha_min <= self.alpha_max:
            raise ValueError(f"AERConfig needs 0 <= alpha_min <= alpha_max, got {self.alpha_min}, {self.alpha_max}")
        if not self.alpha_min <= self.alpha_init <= self.alpha_max:
            raise ValueError(f"AERConfig.alpha_init must lie in [alpha_min, alpha_max], got {self.alpha_init}")
        if not (self.w_max >= 1.0 and math.isfinite(self.w_max)):
            # below 1 the cap would also cut the average prompt of a normalised batch
            raise ValueError(f"AERConfig.w_max must be a finite number >= 1, got {self.w_max}")
        if self.controller not in ("pi_nat", "relative"):
            raise ValueError(f"AERConfig.controller must be pi_nat|relative, got {self.controller!r}")
        if not 0.0 <= self.entropy_smoothing < 1.0:
            raise ValueError(f"AERConfig.entropy_smoothing (λ) must be in [0, 1), got {self.entropy_smoothing}")
        gains = dict(
            integral_gain=self.integral_gain,
            proportional_gain=self.proportional_gain,
            rel_integral_gain=self.rel_integral_gain,
            rel_proportional_gain=self.rel_proportional_gain,
            rel_damping_gain=self.rel_damping_gain,
        )
        bad = {k: v for k, v in gains.items() if not (v >= 0 and math.isfinite(v))}
        if bad:
            raise ValueError(f"AERConfig gains must be finite and >= 0, got {bad}")
        if not 0.0 < self.max_alpha_step <= 1.0:
            raise ValueError(
                f"AERConfig.max_alpha_step (Δα_max, a fraction of alpha_max) must be in (0, 1], "
                f"got {self.max_alpha_step}"
            )


MissingPolicy = Literal["error", "last_stage", "first_stage"]
Schedule = Literal["staged", "interleaved"]


@dataclass(frozen=True)
class CurriculumConfig:
    """Knobs of the curriculum (defaults: SENT's released scripts, one stage repetition).

    Attributes:
        score_key: column holding H_SE (or a dotted path into a dict column).
        num_stages: N, equal-count stages from low to high H_SE.
        stage_epochs: passes over each stage in one sampler epoch (the release: 5).
        schedule: ``"staged"`` (every pass of stage s before any row of stage s+1, the
            release) or ``"interleaved"`` (one pass over every stage, low → high, repeated).
        seed: seed of the within-stage shuffles.
        shuffle_within_stage: shuffle each pass (else ascending score).
        missing_policy: where unscored rows go, or ``"error"``.
    """

    score_key: str = "semantic_entropy"
    num_stages: int = 2
    stage_epochs: int = 1
    schedule: Schedule = "staged"
    seed: int = 1
    shuffle_within_stage: bool = True
    missing_policy: MissingPolicy = "error"

    def __post_init__(self) -> None:
        if self.num_stages < 1:
            raise ValueError(f"curriculum.num_stages must be >= 1, got {self.num_stages}")
        if self.stage_epochs < 1:
            raise ValueError(f"curriculum.stage_epochs must be >= 1, got {self.stage_epochs}")
        if self.schedule not in ("staged", "interleaved"):
            raise ValueError(f"curriculum.schedule must be 'staged' or 'interleaved', got {self.schedule!r}")
        if self.missing_policy not in ("error", "last_stage", "first_stage"):
            raise ValueError(
                f"curriculum.missing_policy must be 'error', 'last_stage' or 'first_stage', got {self.missing_policy!r}"
            )
        if not self.score_key:
            raise ValueError("curriculum.score_key must be a non-empty column name")

    @classmethod
    def from_data_config(cls, data_config: Any) -> CurriculumConfig:
        """Read ``data_config.curriculum`` (DictConfig or dict); seed falls back to data_config.seed, then 1."""
        data = _to_dict(data_config)
        cur = _to_dict(data.get("curriculum"))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cur) - known)
        if unknown:
            raise ValueError(f"unknown curriculum config keys {unknown}; known: {sorted(known)}")
        kwargs = {k: v for k, v in cur.items() if v is not None}
        if "seed" not in kwargs:
            kwargs["seed"] = data.get("seed") if data.get("seed") is not None else 1
        return cls(**kwargs)


def _to_dict(cfg: Any) -> dict:
    if cfg is None:
        return {}
    if isinstance(cfg, Mapping):
        try:  # OmegaConf DictConfig is a Mapping; resolve interpolations
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg, DictConfig):
                return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
        except ImportError:  # pragma: no cover
            pass
        return dict(cfg)
    raise TypeError(f"expected a mapping / DictConfig, got {type(cfg).__name__}")
