"""One schema for every entropy_rl.* knob, pre-flight checks before Ray, and help: a wrong
setting fails on the driver with the key, the allowed values and the fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from recipe.sent import config as schema
from recipe.sent.preflight import PreflightError, preflight

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONF = os.path.join(ROOT, "conf")


def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="entropy_rl", overrides=list(overrides))


def test_yaml_does_not_repeat_the_defaults():
    """conf/entropy_rl.yaml holds no entropy_rl knobs: they come from the dataclasses."""
    top = yaml.safe_load(open(os.path.join(CONF, "entropy_rl.yaml")))
    assert "entropy_rl" not in top
    assert "entropy_rl_schema" in top["defaults"]
    cfg = compose_cfg()
    for k in schema.knobs():
        node = cfg.entropy_rl if not k.section else cfg.entropy_rl[k.section]
        assert k.name in node, k.key
    assert schema.problems(cfg.entropy_rl) == []


@pytest.mark.parametrize("method", sorted(f[:-5] for f in os.listdir(os.path.join(CONF, "method"))))
def test_every_preset_passes_the_schema(method):
    assert schema.problems(compose_cfg(f"method={method}", "backend=cpu").entropy_rl) == []


@pytest.mark.parametrize(
    "override,expect",
    [
        ("entropy_rl.token_kl.kl=lowvar", "entropy_rl.token_kl.kl must be one of abs, k1, low_var_kl"),
        ("entropy_rl.scoring.estimator=counts", "did you mean 'count'?"),
        ("entropy_rl.backend=cuda", "entropy_rl.backend must be one of gpu, cpu, got 'cuda'"),
        ("entropy_rl.aer.rho=1.5", "entropy_rl.aer: rho (ρ) must be in (0, 1), got 1.5"),
        ("entropy_rl.curriculum.num_stages=two", "entropy_rl.curriculum.num_stages must be an integer"),
        ("entropy_rl.aer.controller=pid", "entropy_rl.aer.controller must be one of pi_nat, relative"),
        ("entropy_rl.scoring.n_samples=1", "entropy_rl.scoring: n_samples (M) must be >= 2"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(override, expect):
    found = schema.problems(compose_cfg(override).entropy_rl)
    assert any(expect in p for p in found), found


@pytest.mark.parametrize(
    "override,expect",
    [
        ("entropy_rl.token_kl.beta_hihg=1", "did you mean entropy_rl.token_kl.beta_high?"),
        ("+entropy_rl.curriculum.num_stagse=3", "did you mean entropy_rl.curriculum.num_stages?"),
        ("+entropy_rl.scoring.n_sample=4", "did you mean entropy_rl.scoring.n_samples?"),
    ],
)
def test_misspelled_overrides_get_a_did_you_mean(override, expect):
    (msg,) = schema.override_problems(["method=sent", override])
    assert expect in msg
    assert schema.override_problems(["entropy_rl.token_kl.beta_high=1", "trainer.foo=1", "method=sent"]) == []


def test_help_lists_presets_and_every_knob_with_its_doc():
    text = schema.help_text(CONF)
    for k in schema.knobs():
        assert f"{k.key}:" in text
    assert "aer_relative" in text and "qwen3_14b" in text and "cpu_vllm" in text
    assert "β_high" in text and "κ_I" in text and "--cfg job" in text
    assert "``" not in text  # no raw reST


def _cpu_cfg(tmp_path, monkeypatch, *extra):
    monkeypatch.setenv("ENTROPY_RL_DATA", str(tmp_path / "nodata"))  # read when the config resolves
    return compose_cfg("backend=cpu", f"trainer.default_local_dir={tmp_path / 'ckpt'}", *extra)


def test_missing_cpu_demo_names_the_command_that_builds_it(tmp_path, monkeypatch):
    with pytest.raises(PreflightError) as e:
        preflight(_cpu_cfg(tmp_path, monkeypatch))
    text = str(e.value)
    assert f"actor_rollout_ref.model.path={tmp_path}/nodata/cpu_demo/model does not exist" in text
    assert f"python launch/prepare_cpu_demo.py --out {tmp_path}/nodata/cpu_demo" in text
    assert "data.train_files" in text and e.value.code == 2


def test_no_gpu_hints_the_cpu_backend(tmp_path, monkeypatch):
    cfg = _cpu_cfg(tmp_path, monkeypatch)
    with open_dict(cfg):
        cfg.entropy_rl.backend = "gpu"
    from recipe.sent.preflight import layout_problems

    (msg,) = layout_problems(cfg, gpus=0)
    assert "no NVIDIA GPU is visible" in msg and "backend=cpu" in msg
    with open_dict(cfg):
        cfg.trainer.n_gpus_per_node = 8
    (msg,) = layout_problems(cfg, gpus=2)
    assert "trainer.n_gpus_per_node=8 but 2 GPU(s) are visible" in msg
    with open_dict(cfg):
        cfg.trainer.nnodes = 2
    (msg,) = layout_problems(cfg, gpus=8)
    assert "needs a Ray cluster" in msg and "launch/submit.sh" in msg
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert layout_problems(cfg, gpus=0) == []  # the cluster's resources are checked once joined


def test_demo_present_passes_and_outputs_must_be_writable(tmp_path, demo, monkeypatch):
    monkeypatch.setenv("ENTROPY_RL_DATA", str(demo))
    cfg = compose_cfg("backend=cpu", f"trainer.default_local_dir={tmp_path / 'ckpt'}")
    preflight(cfg)  # nothing to complain about
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = compose_cfg("backend=cpu", f"trainer.default_local_dir={blocker}/ckpt")
    with pytest.raises(PreflightError, match="trainer.default_local_dir=.* cannot be created or written"):
        preflight(cfg)


def test_data_without_the_needed_columns(tmp_path, demo, monkeypatch):
    import pandas as pd

    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"question": ["1+1"], "answer": ["2"]}).to_parquet(bad)
    monkeypatch.setenv("ENTROPY_RL_DATA", str(demo))
    cfg = compose_cfg("backend=cpu", f"data.train_files={bad}", f"trainer.default_local_dir={tmp_path}/c")
    with pytest.raises(PreflightError, match=r"has no column\(s\) prompt, reward_model"):
        preflight(cfg)


def test_vllm_missing_and_scoring_longer_than_the_rollout(tmp_path, demo, monkeypatch):
    import importlib.util

    from recipe.sent import preflight as pf

    monkeypatch.setenv("ENTROPY_RL_DATA", str(demo))
    cfg = compose_cfg(
        "backend=cpu",
        "method=sent",
        "entropy_rl.scoring.max_response_length=4096",
        f"trainer.default_local_dir={tmp_path}/c",
    )
    (msg,) = pf.rollout_problems(cfg)
    assert "entropy_rl.scoring.max_response_length=4096 exceeds the rollout's response budget" in msg
    with open_dict(cfg):
        cfg.entropy_rl.backend = "gpu"
        cfg.actor_rollout_ref.rollout.name = "vllm"
        cfg.entropy_rl.scoring.max_response_length = 8
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "vllm" else real(n, *a))
    (msg,) = pf.rollout_problems(cfg)
    assert "vLLM is not installed" in msg


@pytest.mark.parametrize(
    "args,expect",
    [
        (["--help"], "entropy_rl.aer.rel_integral_gain: float = 0.02"),
        (["entropy_rl.token_kl.beta_hihg=1"], "did you mean entropy_rl.token_kl.beta_high?"),
        (["entropy_rl.token_kl.kl=lowvar"], "did you mean 'low_var_kl'?"),
        (["backend=cpu", "method=grpo"], "python launch/prepare_cpu_demo.py --out"),
    ],
)
def test_main_command_fails_before_ray(tmp_path, args, expect):
    env = {**os.environ, "ENTROPY_RL_DATA": str(tmp_path / "none"), "PYTHONPATH": ROOT}
    p = subprocess.run(
        [sys.executable, "-m", "recipe.sent.main", *args, f"trainer.default_local_dir={tmp_path}/c"]
        if args != ["--help"]
        else [sys.executable, "-m", "recipe.sent.main", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert expect in p.stdout + p.stderr, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.returncode == (0 if args == ["--help"] else 2)
    assert "ray" not in (p.stdout + p.stderr).lower().replace("array", "")  # no Ray process was started


def test_gpu_count_without_torch(tmp_path, monkeypatch):
    """nvidia-smi's list (CUDA_VISIBLE_DEVICES respected); an empty CUDA_VISIBLE_DEVICES is
    none; an nvidia-smi that fails for another reason than a missing driver is 'cannot tell'."""
    from recipe.sent.preflight import visible_gpus

    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text("#!/usr/bin/env bash\necho 'GPU 0: H100 (UUID: a)'; echo 'GPU 1: H100 (UUID: b)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert visible_gpus() == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    smi.write_text("#!/usr/bin/env bash\necho 'Failed to initialize NVML: Unknown Error' >&2; exit 9\n")
    assert visible_gpus() is None
    smi.write_text(
        "#!/usr/bin/env bash\necho \"NVIDIA-SMI has failed because it couldn't communicate with the "
        'NVIDIA driver" >&2; exit 9\n'
    )
    assert visible_gpus() == 0


def test_conflicting_settings_are_refused_by_the_preflight_once_per_start(tmp_path, demo, monkeypatch):
    """The combination rules run in the pre-flight (before Ray), and every check of the
    knobs and their combinations runs once per start: the launch does not repeat them."""
    import recipe.sent.main as main_mod
    import recipe.sent.run as run_mod

    monkeypatch.setenv("ENTROPY_RL_DATA", str(demo))
    cfg = compose_cfg("backend=cpu", "method=aer", f"trainer.default_local_dir={tmp_path / 'ckpt'}")
    with open_dict(cfg):
        cfg.actor_rollout_ref.actor.entropy_coeff = 0.01
    with pytest.raises(PreflightError, match=r"entropy_rl.aer replaces the fixed bonus.*entropy_coeff=0"):
        preflight(cfg)

    calls = {"problems": 0, "combination_problems": 0, "launch": 0}
    for name in ("problems", "combination_problems"):
        real = getattr(schema, name)

        def counted(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(schema, name, counted)
    monkeypatch.setattr(run_mod, "launch", lambda config, mode: calls.__setitem__("launch", calls["launch"] + 1))
    monkeypatch.setattr(main_mod, "select_platform", lambda config: None)
    main_mod.start(compose_cfg("backend=cpu", "method=aer", f"trainer.default_local_dir={tmp_path / 'ckpt'}"), "train")
    assert calls == {"problems": 1, "combination_problems": 1, "launch": 1}
