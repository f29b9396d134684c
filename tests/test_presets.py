"""Every method × model preset composes with Hydra, converts into veRL's config dataclasses,
passes veRL's and our validation; unknown keys fail loudly."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from recipe.sent.config import check_config
from recipe.sent.hooks import aer_config, sent_config
from recipe.sent.ray_trainer import curriculum_kwargs

CONF = os.path.join(os.path.dirname(__file__), "..", "conf")
METHODS = sorted(f[:-5] for f in os.listdir(os.path.join(CONF, "method")) if f.endswith(".yaml"))
MODELS = sorted(f[:-5] for f in os.listdir(os.path.join(CONF, "model")) if f.endswith(".yaml"))


def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base=None):
        return compose(config_name="entropy_rl", overrides=list(overrides))


def test_all_paper_rows_have_a_preset():
    want = {
        "grpo",
        "entropy_bonus",
        "clip_cov",
        "kl_cov",
        "clip_higher",
        "sent",
        "sent_token_only",
        "sent_curriculum_only",
        "aer",
        "aer_no_alloc",
        "aer_no_anchor",
        "aer_fixed_alpha",
        "sent_aer",
    }
    assert want <= set(METHODS)
    assert {
        "r1_distill_qwen_1.5b",
        "qwen2.5_math_7b",
        "qwen3_14b",
        "qwen2.5_0.5b_1gpu",
        "qwen3_4b_base",
        "qwen3_8b_base",
    } <= set(MODELS)


@pytest.mark.parametrize("method", METHODS)
def test_method_preset_converts_to_verl_dataclasses(method):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    cfg = compose_cfg(f"method={method}")
    assert cfg.trainer.use_v1 is False, "we build on the legacy driver"
    assert cfg.entropy_rl.method == method and cfg.trainer.experiment_name == method
    OmegaConf.resolve(cfg)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    check_config(cfg)
    omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    omega_conf_to_dataclass(cfg.algorithm)
    sent_config(cfg.entropy_rl.token_kl)
    aer_config(cfg.entropy_rl.aer)
    if cfg.entropy_rl.curriculum.enable:
        curriculum_kwargs(cfg)


@pytest.mark.parametrize("model", MODELS)
def test_model_preset_composes_with_sent(model):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    cfg = compose_cfg(f"model={model}", "method=sent_aer")
    OmegaConf.resolve(cfg)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    check_config(cfg)
    omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def test_method_semantics():
    c = compose_cfg("method=sent")
    assert c.entropy_rl.curriculum.enable and c.entropy_rl.token_kl.enable and not c.entropy_rl.aer.enable
    c = compose_cfg("method=aer_no_alloc")
    assert c.entropy_rl.aer.enable and c.entropy_rl.aer.allocation == "none"
    c = compose_cfg("method=aer_fixed_alpha")
    assert c.entropy_rl.aer.adaptive is False and c.entropy_rl.aer.alpha_init > 0
    c = compose_cfg("method=kl_cov")
    assert c.actor_rollout_ref.actor.policy_loss.loss_mode == "kl_cov" and not c.entropy_rl.token_kl.enable
    c = compose_cfg("method=entropy_bonus")
    assert c.actor_rollout_ref.actor.entropy_coeff > 0


def test_one_override_per_ablation():
    c = compose_cfg("method=sent", "entropy_rl.token_kl.selection=micro", "entropy_rl.token_kl.mode=paper")
    assert sent_config(c.entropy_rl.token_kl).mode == "paper"


def test_unknown_keys_fail_loudly():
    with pytest.raises(ConfigCompositionException):
        compose_cfg("entropy_rl.token_kl.bogus=1")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("actor_rollout_ref.actor.not_a_key=1")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("method=not_a_method")
    c = compose_cfg("method=sent", "+entropy_rl.token_kl.bogus=1")
    with pytest.raises(ValueError, match="bogus"):
        check_config(c)
    c = compose_cfg("method=aer", "+entropy_rl.aer.rh0=0.5")
    with pytest.raises(ValueError, match="rh0"):
        check_config(c)


def test_conflicting_settings_are_named():
    with pytest.raises(ValueError, match="use_v1"):
        check_config(compose_cfg("trainer.use_v1=true"))
    with pytest.raises(ValueError, match="loss_mode"):
        check_config(compose_cfg("method=sent", "actor_rollout_ref.actor.policy_loss.loss_mode=kl_cov"))
    with pytest.raises(ValueError, match="entropy_coeff"):
        check_config(compose_cfg("method=aer", "actor_rollout_ref.actor.entropy_coeff=0.01"))
    with pytest.raises(ValueError, match="calculate_entropy"):
        check_config(compose_cfg("method=sent", "actor_rollout_ref.actor.calculate_entropy=false"))
    with pytest.raises(ValueError, match="selection"):
        check_config(compose_cfg("method=sent", "entropy_rl.token_kl.selection=global"))
    with pytest.raises(ValueError, match="rho"):
        check_config(compose_cfg("method=aer", "entropy_rl.aer.rho=1.5"))
