"""AER — Adaptive Entropy Regularization (arXiv 2510.10959), as a small controller.

The paper's three components, each switchable so every ablation row is one override:

1. **Difficulty-aware allocation** (``allocation``). Each prompt gets a weight w(acc) from its
   group accuracy acc ∈ [0, 1] (the share of its n rollouts that were correct):
     - ``"linear"``  (default): w = 1 − acc — harder prompts get more entropy pressure, a prompt
       the policy always solves gets none;
     - ``"threshold"``: w = 1 if acc < τ else 0 — only "hard" prompts (τ = 0.4, the value the
       one third-party summary reports) are regularised;
     - ``"none"``: w = 1 for every prompt (the "without allocation" ablation).
   With ``normalize_weights`` the weights are rescaled to mean 1 over the batch's responses,
   so α_t keeps the meaning "batch-average bonus coefficient" and the allocation ablation is
   compared at equal total pressure. Then every weight is capped at ``w_max``: normalising
   alone is unbounded (a batch of 256 prompts of which 255 are always solved and one never
   gives that one w = 256, i.e. a per-token coefficient of 25.6 at α_max = 0.1, enough to blow
   its tokens' entropy up in one update). So e_t = α_t·w ≤ α_max·w_max always holds. Where the
   cap binds the batch-average coefficient drops below α_t (total pressure is not moved onto
   the easier prompts: they were given little on purpose).
2. **Initial-anchored target** (``anchor``). H* = ρ·H₀ with ρ ∈ (0, 1): the abstract says
   balanced exploration keeps entropy in a moderate range *below* its initial level. H₀ is the
   mean batch token entropy of the first ``anchor_steps`` updates (a one-step H₀ is noisy, ±0.03
   nats at 128 samples in our probe). Without anchor, H* = ``target_entropy`` (absolute).
3. **Dynamic global coefficient** (``adaptive``). Every step, with the smoothed entropy
   H̄_t = λ·H̄_{t−1} + (1 − λ)·H_t and error e_t = H* − H̄_t:
       I_t = clip(I_{t−1} + η·e_t, α_min, α_max)      (integral, anti-windup by the clip)
       α_t = clip(I_t + κ·e_t,     α_min, α_max)      (plus an optional proportional term)
   so α rises while entropy is below target and falls while above. ``adaptive: false`` keeps
   α_t = α_init (the "fixed α" ablation).

   That rule (``controller: pi_nat``) integrates per *nat* of error, so its behaviour depends
   on the entropy's units: at the CPU demo's 0.1-nat scale its proportional term is ≤ 0.01 and
   its integral moves ≤ 0.005 per step, so α reached its cap only after the entropy had
   collapsed, and during the ~20 steps the policy took to answer, kept integrating and
   overshot to 4 × H* (docs/science.md). ``controller: relative`` works on the *relative*
   error r_t = clip((H* − H̄_t)/H*, −1, 1) and the relative slope s_t = (H̄_t − H̄_{t−1})/H*,
   both unit-free, with every gain a fraction of α_max:
       I_t = clip(I_{t−1} + κ_I·α_max·r_t, α_min, α_max)    unless the entropy already moves
                                                             toward H* (r_t·s_t > 0) or α is
                                                             held by a bound in r_t's direction
       α_t = clip(I_t + κ_P·α_max·r_t − κ_D·α_max·s_t, α_min, α_max, α_{t−1} ± Δα_max·α_max)
   - κ_P = 0.5: half the cap at full relative error (entropy gone), a quarter of it at half
     the target — the push that vanishes as the entropy comes back, so it cannot wind up;
   - κ_I = 0.02 per step: finds the steady α the collapse pressure needs, slowly — a full
     cap takes ≥ 50 steps of full error, over twice the policy's measured ~20-step lag;
   - κ_D = 1.0: brakes a fast rise (the demo's 0.077 → 0.21 nats in 7 steps is s ≈ 0.25 per
     step: −0.025 of α per step) before it overshoots;
   - conditional integration (the anti-windup): the integral holds while the entropy is
     already returning, the phase in which the per-nat rule wound up to its cap;
   - Δα_max = 0.1 (α may move a tenth of its range per step): the lag means a faster α is
     only seen after it has overshot.
   The gains were chosen on closed-loop plants (tests/test_aer.py) with entropy scales 0.05,
   0.3 and 1.0 nats and response lags of 0, 5 and 20 steps, a self-reinforcing response and a
   doubling of the collapse pressure mid-run; the same gains hold every one of them
   (mean |H − H*|/H* ≤ 0.2, peak ≤ 1.3 × H*, α never pinned at its cap).

The per-token bonus coefficient is e_t = α_t · w(prompt of t); the loss subtracts
agg(e ⊙ H) (:func:`entropy_rl.losses.compute_policy_loss`).

Defaults and why (the method section was not available to us; these are documented
assumptions, measured only at toy scale in a feasibility probe, ``docs/paper_settings.md``): ρ = 0.6, η = 0.1 per
nat, α ∈ [0, 0.1] — the probe's best-behaved setting held entropy at H* with a mean |H − H*|
of 0.03 nats, while a looser cap (α ≤ 0.5, η = 0.2) overshot into an entropy spike. α_init = 0:
the bonus only switches on once entropy falls below H*. λ = 0.5 smooths per-step noise
without adding more than a step of lag. κ = 0.2: the probe found an integral-only update lags
and oscillates; on the closed-loop test plant (tests/test_aer.py) the proportional term cut the
mean |H − H*| from 0.024 to about 0.015 nats. ``proportional_gain: 0`` gives the probe's integral-only rule.

w_max = 4 (the weight cap): with α_max = 0.1 the largest per-token coefficient is then 0.4,
below the global α = 0.5 at which the probe's controller overshot into an entropy explosion,
and within the 0.05–0.1 range where the probe saw a bonus act at all on prompts of weight
≥ 1. And 4 leaves the allocation untouched in the batches it was designed for: with linear
weights the largest weight is (1 − acc_min)/mean(1 − acc) ≤ 1/(1 − mean acc), so no weight
is capped while the batch's mean accuracy is ≤ 0.75 (GRPO's useful regime); the cap only
acts on nearly-solved batches, where a handful of failures would otherwise absorb the whole
batch's bonus.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch

from entropy_rl.config import AERConfig  # noqa: F401  (re-exported: the controller's knobs)


def difficulty_weights(accuracy: torch.Tensor, cfg: AERConfig) -> torch.Tensor:
    """w(acc) per response (or prompt), from its prompt's group accuracy in [0, 1], at most ``w_max``.

    A NaN / ±inf accuracy raises ``ValueError`` naming its position: clamped or normalised it
    would turn every weight, and so the whole entropy bonus, into NaN. (A driver-side check
    on host tensors; the loss itself never calls this.)
    """
    acc = accuracy.float()
    bad = ~torch.isfinite(acc)
    if bool(bad.any()):
        i = int(bad.reshape(-1).int().argmax())
        raise ValueError(
            f"AER difficulty_weights: accuracy[{i}] = {acc.reshape(-1)[i].item()} is not finite "
            f"({int(bad.sum())} of {acc.numel()} values); group accuracies must lie in [0, 1]"
        )
    acc = acc.clamp(0.0, 1.0)
    if cfg.allocation == "linear":
        w = 1.0 - acc
    elif cfg.allocation == "threshold":
        w = (acc < cfg.hard_accuracy).float()
    else:
        w = torch.ones_like(acc)
    if cfg.normalize_weights:
        # mean 1 over the batch; an all-solved batch keeps all-zero weights (no bonus at all)
        w = w / torch.clamp(w.mean(), min=1e-12) * (w.sum() > 0)
    return torch.clamp(w, max=cfg.w_max)


class AERController:
    """Holds α_t, H₀ and H*; call :meth:`step` once per training step, before the update.

    Typical use in a trainer::

        metrics = aer.step(batch_token_entropy)           # moves α_t
        coef = aer.token_coefficients(group_acc, mask)    # (B, T) e_t for the loss
    """

    def __init__(self, cfg: AERConfig) -> None:
        self.cfg = cfg
        self.alpha = cfg.alpha_init
        self.integral = cfg.alpha_init
        self.steps = 0
        self.h0: float | None = None
        self._h0_sum = 0.0
        self._h0_count = 0
        self.h_smooth: float | None = None
        self.h_smooth_prev: float | None = None

    @property
    def target(self) -> float | None:
        """H*; None while H₀ is still being measured."""
        if not self.cfg.anchor:
            return self.cfg.target_entropy
        return None if self.h0 is None else self.cfg.rho * self.h0

    def step(self, entropy: float) -> dict[str, float]:
        """Feed the batch's mean token entropy H_t (nats); update H₀ / α_t; return metrics.

        A NaN / ±inf / negative H_t (or one that is not a single number) raises ``ValueError``
        before any state changes: one bad batch must not corrupt H₀, H̄_t or the integral.
        """
        try:
            entropy = float(entropy)
        except (TypeError, ValueError, RuntimeError) as e:  # RuntimeError: a multi-element tensor
            raise ValueError(
                f"AERController.step (step {self.steps + 1}): entropy must be one finite number >= 0, "
                f"got {type(entropy).__name__} {entropy!r:.80}"
            ) from e
        if not math.isfinite(entropy) or entropy < 0:
            raise ValueError(
                f"AERController.step (step {self.steps + 1}): entropy H_t must be a finite value >= 0, "
                f"got {entropy}; α_t, H₀ and H̄ are left unchanged"
            )
        cfg = self.cfg
        self.steps += 1
        lam = cfg.entropy_smoothing
        self.h_smooth_prev = self.h_smooth
        self.h_smooth = entropy if self.h_smooth is None else lam * self.h_smooth + (1 - lam) * entropy

        if cfg.anchor and self.h0 is None:
            self._h0_sum += entropy
            self._h0_count += 1
            if self._h0_count >= cfg.anchor_steps:
                self.h0 = self._h0_sum / self._h0_count  # anchored once, never moved again

        target = self.target
        error = 0.0
        nan = float("nan")
        extra = (
            {"aer/relative_error": nan, "aer/relative_slope": nan, "aer/integrating": nan}
            if cfg.controller == "relative"
            else {}
        )
        if cfg.adaptive and target is not None:
            error = target - self.h_smooth
            if cfg.controller == "pi_nat":
                self.integral = min(max(self.integral + cfg.integral_gain * error, cfg.alpha_min), cfg.alpha_max)
                self.alpha = min(max(self.integral + cfg.proportional_gain * error, cfg.alpha_min), cfg.alpha_max)
            else:
                extra = self._relative_step(target)

        return {
            **extra,
            "aer/alpha": self.alpha,
            "aer/target_entropy": float("nan") if target is None else target,
            "aer/h0": float("nan") if self.h0 is None else self.h0,
            "aer/entropy": entropy,
            "aer/entropy_smoothed": self.h_smooth,
            "aer/error": error,
        }

    def _relative_step(self, target: float) -> dict[str, float]:
        """The scale-free update of α_t (``controller: relative``); returns its terms as metrics."""
        cfg = self.cfg
        span = cfg.alpha_max
        # H* = 0 (an absolute target of zero) has no relative scale: treat any entropy as above it
        rel = -1.0 if target <= 0 else min(max((target - self.h_smooth) / target, -1.0), 1.0)
        slope = 0.0
        if self.h_smooth_prev is not None and target > 0:
            slope = (self.h_smooth - self.h_smooth_prev) / target
        lo = max(cfg.alpha_min, self.alpha - cfg.max_alpha_step * span)
        hi = min(cfg.alpha_max, self.alpha + cfg.max_alpha_step * span)

        def alpha_from(integral: float) -> float:
            raw = integral + cfg.rel_proportional_gain * span * rel - cfg.rel_damping_gain * span * slope
            return min(max(raw, lo), hi)

        returning = rel * slope > 0  # below H* and rising, or above and falling
        alpha = alpha_from(self.integral)
        # integrating further while α is already held at a bound in the same direction only winds up
        held = (rel > 0 and alpha >= hi) or (rel < 0 and alpha <= lo)
        integrating = not returning and not held
        if integrating:
            self.integral = min(max(self.integral + cfg.rel_integral_gain * span * rel, cfg.alpha_min), cfg.alpha_max)
            alpha = alpha_from(self.integral)
        self.alpha = alpha
        return {"aer/relative_error": rel, "aer/relative_slope": slope, "aer/integrating": float(integrating)}

    def prompt_weights(self, accuracy: torch.Tensor) -> torch.Tensor:
        """w(prompt) for each response, from its prompt's group accuracy."""
        return difficulty_weights(accuracy, self.cfg)

    def token_coefficients(self, accuracy: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """e_t = α_t · w(prompt) on every valid response token, (B, T); 0 on padding."""
        w = self.prompt_weights(accuracy).to(response_mask.device)
        return self.alpha * w[:, None] * (response_mask != 0).float()

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg),
            "alpha": self.alpha,
            "integral": self.integral,
            "steps": self.steps,
            "h0": self.h0,
            "h0_sum": self._h0_sum,
            "h0_count": self._h0_count,
            "h_smooth": self.h_smooth,
            "h_smooth_prev": self.h_smooth_prev,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("config") != asdict(self.cfg):
            # A resumed run with other AER knobs is a different experiment: say so.
            raise ValueError(
                f"AERController.load_state_dict: checkpoint config {state.get('config')} "
                f"differs from the running config {asdict(self.cfg)}"
            )
        self.alpha = float(state["alpha"])
        self.integral = float(state["integral"])
        self.steps = int(state["steps"])
        self.h0 = None if state["h0"] is None else float(state["h0"])
        self._h0_sum = float(state["h0_sum"])
        self._h0_count = int(state["h0_count"])
        self.h_smooth = None if state["h_smooth"] is None else float(state["h_smooth"])
        self.h_smooth_prev = None if state["h_smooth_prev"] is None else float(state["h_smooth_prev"])
