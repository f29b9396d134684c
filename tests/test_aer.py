"""AER controller: direction of α, bounds, one-time anchor, allocation, state, closed loop."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from entropy_rl.aer import AERConfig, AERController, difficulty_weights


def anchored(h0=1.0, **kw):
    cfg = AERConfig(anchor_steps=2, entropy_smoothing=0.0, **kw)
    c = AERController(cfg)
    c.step(h0)
    c.step(h0)
    return c


def test_alpha_rises_below_target_and_falls_above():
    c = anchored(alpha_init=0.05, rho=0.5)  # H* = 0.5
    a0 = c.alpha
    for _ in range(3):
        c.step(0.3)  # below target
    assert c.alpha > a0
    a1 = c.alpha
    for _ in range(3):
        c.step(0.8)  # above target
    assert c.alpha < a1


def test_alpha_stays_in_bounds():
    c = anchored(alpha_min=0.01, alpha_max=0.05, alpha_init=0.02, integral_gain=10.0, proportional_gain=5.0)
    seen = []
    for h in [0.0] * 20 + [5.0] * 20 + [0.0, 5.0] * 10:
        c.step(h)
        seen.append(c.alpha)
    assert min(seen) == pytest.approx(0.01) and max(seen) == pytest.approx(0.05)
    assert all(0.01 - 1e-12 <= a <= 0.05 + 1e-12 for a in seen)


def test_h0_anchored_once_from_first_steps():
    c = AERController(AERConfig(anchor_steps=3, rho=0.5, alpha_init=0.0, entropy_smoothing=0.0))
    m = c.step(1.0)
    assert c.h0 is None and c.target is None and c.alpha == 0.0 and m["aer/h0"] != m["aer/h0"]  # NaN
    c.step(2.0)
    c.step(3.0)
    assert c.h0 == pytest.approx(2.0) and c.target == pytest.approx(1.0)
    for h in [0.1, 9.0, 0.5]:
        c.step(h)
    assert c.h0 == pytest.approx(2.0), "H0 must never move after anchoring"


def test_alpha_constant_before_anchor_and_when_not_adaptive():
    c = AERController(AERConfig(anchor_steps=5, alpha_init=0.03))
    for h in [0.1, 0.1, 0.1, 0.1]:
        c.step(h)
    assert c.alpha == 0.03
    fixed = AERController(AERConfig(adaptive=False, alpha_init=0.04, anchor_steps=1))
    for h in [0.0, 3.0, 0.0, 3.0]:
        fixed.step(h)
    assert fixed.alpha == 0.04


def test_no_anchor_uses_absolute_target():
    c = AERController(AERConfig(anchor=False, target_entropy=0.4, entropy_smoothing=0.0))
    assert c.target == 0.4
    c.step(0.2)
    assert c.alpha == pytest.approx(0.1 * 0.2 + 0.2 * 0.2)  # η·e + κ·e, e = H* − H = 0.2
    with pytest.raises(ValueError, match="target_entropy"):
        AERConfig(anchor=False)


def test_update_rule_exact():
    c = AERController(
        AERConfig(
            anchor_steps=1, rho=0.5, integral_gain=0.2, proportional_gain=0.5, entropy_smoothing=0.5, alpha_max=1.0
        )
    )
    c.step(1.0)  # H0 = 1, H* = 0.5, smooth 1.0 → e = −0.5: clipped at 0
    assert c.alpha == 0.0 and c.integral == 0.0
    c.step(0.0)  # smooth 0.5 → e = 0
    assert c.alpha == 0.0
    c.step(0.0)  # smooth 0.25 → e = 0.25: I = 0.05, α = 0.05 + 0.125
    assert c.integral == pytest.approx(0.05) and c.alpha == pytest.approx(0.175)


def test_difficulty_weights():
    acc = torch.tensor([1.0, 1.0, 0.5, 0.5, 0.0, 0.0])
    lin = difficulty_weights(acc, AERConfig(normalize_weights=False))
    assert lin.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    norm = difficulty_weights(acc, AERConfig())
    assert norm.mean().item() == pytest.approx(1.0) and norm[0] == 0 and norm[4] > norm[2]
    thr = difficulty_weights(
        torch.tensor([0.0, 0.3, 0.4, 0.9]), AERConfig(allocation="threshold", normalize_weights=False)
    )
    assert thr.tolist() == [1.0, 1.0, 0.0, 0.0]
    none = difficulty_weights(acc, AERConfig(allocation="none"))
    assert torch.all(none == 1.0)
    solved = difficulty_weights(torch.ones(4), AERConfig())
    assert torch.all(solved == 0.0), "a batch the policy always solves gets no bonus"


def test_token_coefficients_shape_and_mask():
    c = AERController(AERConfig(alpha_init=0.05, normalize_weights=False))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    coef = c.token_coefficients(torch.tensor([0.0, 0.5]), mask)
    torch.testing.assert_close(coef, torch.tensor([[0.05, 0.05, 0.0], [0.025, 0.0, 0.0]]))


def test_state_round_trip_continues_identically():
    cfg = AERConfig(anchor_steps=2, proportional_gain=0.3)
    a, b = AERController(cfg), None
    hs = [1.0, 0.9, 0.7, 0.5, 0.45, 0.4, 0.6, 0.3, 0.2, 0.5]
    for h in hs[:5]:
        a.step(h)
    b = AERController(cfg)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for h in hs[5:]:
        assert a.step(h) == b.step(h)
    assert a.state_dict() == b.state_dict()
    with pytest.raises(ValueError, match="differs"):
        AERController(AERConfig(rho=0.7)).load_state_dict(a.state_dict())


def test_rejects_bad_inputs():
    c = AERController(AERConfig())
    with pytest.raises(ValueError, match="finite"):
        c.step(float("nan"))
    with pytest.raises(ValueError, match="rho"):
        AERConfig(rho=1.5)
    with pytest.raises(ValueError, match="alpha_init"):
        AERConfig(alpha_init=0.5, alpha_max=0.1)


@pytest.mark.parametrize(
    "bad",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        -0.1,
        torch.tensor(float("nan")),
        np.float64("nan"),
        torch.ones(2),
        "0.5x",
        None,
    ],
    ids=repr,
)
def test_step_rejects_bad_entropy_and_keeps_state(bad):
    """A non-finite (or negative, or not-a-number) H_t raises, names the step, and leaves α_t,
    H₀, H̄_t and the integral exactly as they were: the run continues as if it never came."""
    c, clean = anchored(h0=1.0, alpha_init=0.02), anchored(h0=1.0, alpha_init=0.02)
    c.step(0.4)
    clean.step(0.4)
    before = copy.deepcopy(c.state_dict())
    with pytest.raises(ValueError, match=r"step 4\): entropy"):
        c.step(bad)
    assert c.state_dict() == before
    for h in (0.3, 0.5, 0.2):
        assert c.step(h) == clean.step(h)


def test_difficulty_weights_edge_cases():
    cfgs = [
        AERConfig(),
        AERConfig(normalize_weights=False),
        AERConfig(allocation="threshold"),
        AERConfig(allocation="none"),
    ]
    for cfg in cfgs:
        for acc in (torch.zeros(6), torch.ones(6), torch.tensor([0.5]), torch.tensor([0.9, 0.95, 1.0]), torch.zeros(0)):
            w = difficulty_weights(acc, cfg)
            assert w.shape == acc.shape and torch.all(torch.isfinite(w)) and torch.all(w >= 0)
            if cfg.normalize_weights and w.numel() and w.sum() > 0:
                assert w.mean().item() == pytest.approx(1.0)
    # hard-only allocation with no hard prompt: no bonus at all (not 0/0)
    assert torch.all(difficulty_weights(torch.tensor([0.9, 1.0]), AERConfig(allocation="threshold")) == 0)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"accuracy\[2\] = (nan|inf) is not finite \(1 of 4"):
            difficulty_weights(torch.tensor([0.0, 0.5, bad, 1.0]), AERConfig())
    c = AERController(AERConfig(alpha_init=0.05))
    coef = c.token_coefficients(torch.tensor([0.0, 1.0]), torch.zeros(2, 3))  # no valid token
    assert torch.all(coef == 0)


def test_closed_loop_holds_entropy_near_target():
    """A collapsing plant: H_{t+1} = H_t − d·H_t + g·α_t + noise. GRPO alone (α = 0) collapses;
    the controller must hold H near H* = ρ·H0 without blowing up."""
    gen = torch.Generator().manual_seed(0)

    def run(cfg, steps=300):
        c, h, trace = AERController(cfg), 0.36, []
        for _ in range(steps):
            c.step(h)
            h = max(0.0, h - 0.02 * h + 0.25 * c.alpha + 0.005 * torch.randn(1, generator=gen).item())
            trace.append(h)
        return c, trace

    _, grpo = run(AERConfig(adaptive=False, alpha_init=0.0))
    assert grpo[-1] < 0.36 * 0.2, "the plant collapses without a bonus"
    c, tr = run(AERConfig(rho=0.6))
    tail = tr[150:]
    mean_err = sum(abs(h - c.target) for h in tail) / len(tail)
    assert mean_err < 0.02, mean_err
    assert max(tail) < c.h0, "entropy must stay below its initial level (no explosion)"


# ----------------------------------------------------------------- scale-free controller


def lagged_plant(cfg, scale, lag, kind="linear", steps=300, seed=0, collapse=0.02, gain=0.5, noise=0.15):
    """A collapsing policy whose entropy answers the bonus late, in units of ``scale`` nats.

    True state h (in units of H₀ = ``scale``): h ← h − d·h + g·x, where x is α after a dead time
    of ``lag`` steps and a first-order lag (the real loop answered α ~20 steps late). ``kind``:
    ``linear``; ``reinforcing`` (the bonus acts more the flatter the policy already is, the
    fast 0.077 → 0.21 nats rise of the demo run); ``step`` (the collapse pressure doubles at step
    120). The controller sees H = scale·h·(1 + 15% noise), the demo's batch-to-batch spread.
    Returns (controller, true h per step, α per step)."""
    rng = np.random.default_rng(seed)
    c, h, x = AERController(cfg), 1.0, 0.0
    sent, trace, alphas = [0.0] * (lag + 1), [], []
    smooth = {0: 0.0, 5: 0.5, 20: 0.7}[lag]
    for t in range(steps):
        c.step(max(1e-6, scale * h * (1 + noise * rng.standard_normal())))
        sent.append(c.alpha)
        x = smooth * x + (1 - smooth) * sent[-1 - lag]
        d = collapse * (2.0 if kind == "step" and t >= 120 else 1.0)
        g = gain * (h / 0.6 if kind == "reinforcing" else 1.0)
        h = max(1e-3, h - d * h + g * x)
        trace.append(h)
        alphas.append(c.alpha)
    return c, trace, alphas


def tracking(c, trace, alphas, scale, start=150):
    """(mean |h − H*|/H* over steps ≥ start, peak h / H* after step 20, longest run of α at its cap),
    on the plant's true state; H* is the controller's own, anchored on noisy readings."""
    target = c.target / scale
    tail = trace[start:]
    rel_err = sum(abs(h - target) for h in tail) / len(tail) / target
    peak = max(trace[20:]) / target
    pinned = run = 0
    for a in alphas:
        run = run + 1 if a >= c.cfg.alpha_max * (1 - 1e-9) else 0
        pinned = max(pinned, run)
    return rel_err, peak, pinned


PLANTS = [
    (kind, scale, lag) for kind in ("linear", "reinforcing", "step") for scale in (0.05, 0.3, 1.0) for lag in (0, 5, 20)
]


@pytest.mark.parametrize("kind,scale,lag", PLANTS)
def test_relative_controller_holds_target_at_every_scale_and_lag(kind, scale, lag):
    """One set of gains: mean |H − H*|/H* ≤ 0.2 over steps 150–300, no overshoot past 1.3 × H*,
    α never pinned at its cap for more than 3 steps — at 0.05, 0.3 and 1.0 nats alike."""
    for seed in (0, 1):
        c, trace, alphas = lagged_plant(AERConfig(controller="relative", anchor_steps=2), scale, lag, kind, seed=seed)
        rel_err, peak, pinned = tracking(c, trace, alphas, scale)
        assert rel_err <= 0.2, (seed, rel_err)
        assert peak <= 1.3, (seed, peak)
        assert pinned <= 3, (seed, pinned)


def test_relative_controller_is_scale_free_and_the_per_nat_rule_is_not():
    """The same plant in other units: the relative rule gives the same α trajectory (to float
    rounding); the per-nat rule's α differs, and at 20 steps of lag it overshoots past 2 × H*."""
    rel = [lagged_plant(AERConfig(controller="relative", anchor_steps=2), s, 20)[2] for s in (0.05, 1.0)]
    assert np.allclose(rel[0], rel[1], atol=1e-9)
    nat = [lagged_plant(AERConfig(controller="pi_nat", anchor_steps=2), s, 20) for s in (0.05, 1.0)]
    assert not np.allclose(nat[0][2], nat[1][2], atol=1e-3)
    overshoot = [tracking(c, tr, al, s)[1] for (c, tr, al), s in zip(nat, (0.05, 1.0))]
    assert max(overshoot) > 2.0, overshoot


def test_relative_controller_anti_windup_and_step_bound():
    """While the entropy rises back toward H* the integral holds; α never moves more than
    Δα_max·α_max in one step; above H* α falls; an all-zero target cannot divide by zero."""
    cfg = AERConfig(controller="relative", anchor_steps=2, entropy_smoothing=0.0, alpha_max=0.1, max_alpha_step=0.1)
    c = AERController(cfg)
    c.step(1.0)
    c.step(1.0)  # H₀ = 1, H* = 0.6
    prev = c.alpha
    m = c.step(0.3)  # a fall of 0.7 nats: P + D ask for far more than one step's Δα_max
    assert c.alpha == pytest.approx(0.01) and m["aer/integrating"] == 0.0 and c.integral == 0.0
    prev = c.alpha
    for _ in range(6):  # below target, flat: α climbs by at most 0.01 per step, then integrates
        m = c.step(0.3)
        assert c.alpha - prev <= 0.1 * 0.1 + 1e-12
        prev = c.alpha
    assert m["aer/integrating"] == 1.0 and c.integral > 0
    integral = c.integral
    m = c.step(0.4)  # still below, but returning: the integral holds
    assert m["aer/integrating"] == 0.0 and c.integral == integral
    assert m["aer/relative_error"] == pytest.approx((0.6 - 0.4) / 0.6)
    assert m["aer/relative_slope"] == pytest.approx((0.4 - 0.3) / 0.6)
    before = c.alpha
    c.step(0.9)
    c.step(0.9)  # above target: α falls
    assert c.alpha < before
    z = AERController(AERConfig(controller="relative", anchor=False, target_entropy=0.0))
    z.step(0.5)
    assert z.alpha == 0.0


def test_relative_controller_state_round_trip():
    cfg = AERConfig(controller="relative", anchor_steps=2)
    a = AERController(cfg)
    for h in (0.5, 0.5, 0.2, 0.25, 0.22):
        a.step(h)
    b = AERController(cfg)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for h in (0.1, 0.15, 0.4):
        assert a.step(h) == b.step(h)


def test_pi_nat_rule_unchanged_by_the_controller_option():
    """``controller: pi_nat`` is the rule of the first 150-step table, step for step."""
    cfg = AERConfig(anchor_steps=2, entropy_smoothing=0.5)
    c = AERController(cfg)
    integral = alpha = 0.0
    hs, h_s = [0.3, 0.3, 0.1, 0.12, 0.05, 0.2, 0.4], None
    for i, h in enumerate(hs):
        c.step(h)
        h_s = h if h_s is None else 0.5 * h_s + 0.5 * h
        if i >= 1:
            e = 0.6 * 0.3 - h_s
            integral = min(max(integral + 0.1 * e, 0.0), 0.1)
            alpha = min(max(integral + 0.2 * e, 0.0), 0.1)
        assert c.alpha == pytest.approx(alpha, abs=1e-15)
