"""Launch scripts pass overrides through, prepare missing data, submit a valid runtime env;
the main job refuses clearly when the cluster lacks the GPUs it asks for."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def stub(path, body):
    with open(path, "w") as f:
        f.write("#!/usr/bin/env bash\n" + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return str(path)


@pytest.mark.parametrize("script", ["launch/train.sh", "launch/submit.sh", "launch/slurm.sbatch"])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", os.path.join(ROOT, script)], check=True)


def gpu_env(tmp_path, **extra):
    """A PATH with a fake `nvidia-smi` that lists one GPU."""
    bindir = tmp_path / "gpubin"
    bindir.mkdir(exist_ok=True)
    stub(bindir / "nvidia-smi", 'echo "GPU 0: NVIDIA H100 (UUID: GPU-0)"\n')
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return {**env, "PATH": f"{bindir}:{os.environ['PATH']}", **extra}


def test_train_sh_passes_overrides_and_skips_prepared_data(tmp_path):
    data = tmp_path / "data"
    for rel in ("dapo_math_17k/train.parquet", "math500/test.parquet", "aime24/test.parquet"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(b"")
    log = tmp_path / "args"
    py = stub(tmp_path / "py", f'printf "%s\\n" "$@" > {log}\n')
    env = gpu_env(tmp_path, PYTHON=py, ENTROPY_RL_DATA=str(data))
    subprocess.run(
        ["bash", os.path.join(ROOT, "launch/train.sh"), "method=sent", "trainer.n_gpus_per_node=8"], check=True, env=env
    )
    assert log.read_text().split() == ["-m", "recipe.sent.main", "method=sent", "trainer.n_gpus_per_node=8"]


def test_train_sh_prepares_missing_data_first(tmp_path):
    log = tmp_path / "calls"
    py = stub(tmp_path / "py", f'echo "$*" >> {log}\n')
    env = gpu_env(tmp_path, PYTHON=py, ENTROPY_RL_DATA=str(tmp_path / "empty"))
    subprocess.run(["bash", os.path.join(ROOT, "launch/train.sh"), "method=aer"], check=True, env=env)
    first, second = log.read_text().strip().splitlines()
    assert first.startswith("launch/prepare_data.py") and "dapo_math_17k,math500,aime24" in first
    assert second == "-m recipe.sent.main method=aer"


@pytest.mark.parametrize("hide", ["empty_cuda_visible_devices", "no_nvidia_smi"])
def test_train_sh_without_gpu_runs_the_cpu_backend(tmp_path, hide):
    log = tmp_path / "calls"
    py = stub(tmp_path / "py", f'echo "$*" >> {log}\n')
    if hide == "empty_cuda_visible_devices":
        env = gpu_env(tmp_path, PYTHON=py, ENTROPY_RL_DATA=str(tmp_path / "d"), CUDA_VISIBLE_DEVICES="")
    else:
        env = {**os.environ, "PYTHON": py, "ENTROPY_RL_DATA": str(tmp_path / "d"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        ["bash", os.path.join(ROOT, "launch/train.sh"), "trainer.total_training_steps=5"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert "no GPU visible" in out
    first, second = log.read_text().strip().splitlines()
    assert first.startswith("launch/prepare_cpu_demo.py --out") and first.endswith("/d/cpu_demo")
    assert second == (
        "-m recipe.sent.main backend=cpu method=sent_aer entropy_rl.curriculum.adaptive=true "
        "trainer.total_training_steps=5"
    )


def fake_ray(tmp_path, log):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    stub(
        bindir / "ray",
        f"python3 -c \"import json,sys; json.dump(sys.argv[1:], open('{log}','w'))\" \"$@\"\n"
        "echo \"Job 'raysubmit_AbC123' submitted successfully\"\n",
    )
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}


def test_submit_sh_sends_a_valid_runtime_env(tmp_path):
    log = tmp_path / "args.json"
    env = {**fake_ray(tmp_path, log), "RAY_ADDRESS": "http://10.0.0.1:8265"}
    subprocess.run(
        ["bash", os.path.join(ROOT, "launch/submit.sh"), "method=sent", "trainer.nnodes=2"],
        check=True,
        env=env,
        capture_output=True,
    )
    args = json.loads(log.read_text())
    assert args[:3] == ["job", "submit", "--address"] and args[3] == "http://10.0.0.1:8265"
    renv = json.loads(args[args.index("--runtime-env-json") + 1])
    assert renv["working_dir"] == ROOT and ".venv/" in renv["excludes"]
    assert "ENTROPY_RL_DATA" in renv["env_vars"] and "VERL_PLATFORM" not in renv["env_vars"]
    assert "--no-wait" not in args
    assert args[args.index("--") + 1 :] == ["python", "-m", "recipe.sent.main", "method=sent", "trainer.nnodes=2"]


def test_submit_sh_options(tmp_path):
    log = tmp_path / "args.json"
    env = fake_ray(tmp_path, log)
    out = subprocess.run(
        [
            "bash",
            os.path.join(ROOT, "launch/submit.sh"),
            "--address",
            "http://127.0.0.1:8265",
            "--packaged",
            "--no-wait",
            "--",
            "backend=cpu",
            "method=grpo",
        ],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    args = json.loads(log.read_text())
    renv = json.loads(args[args.index("--runtime-env-json") + 1])
    assert "working_dir" not in renv, "--packaged uploads nothing"
    assert renv["env_vars"]["VERL_PLATFORM"] == "cpu", "the CPU backend's platform reaches every worker"
    assert "--no-wait" in args and "job id: raysubmit_AbC123" in out
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run(
            ["bash", os.path.join(ROOT, "launch/submit.sh"), "--bogus"], check=True, env=env, capture_output=True
        )
    dry = subprocess.run(
        ["bash", os.path.join(ROOT, "launch/submit.sh"), "--dry-run", "method=aer"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert dry.startswith("ray job submit") and "recipe.sent.main method=aer" in dry


def test_slurm_dry_run_on_a_fake_node_list(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub(bindir / "scontrol", 'printf "gpu-a01\\ngpu-a02\\ngpu-a03\\n"\n')
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "DRY_RUN": "1",
        "SLURM_JOB_NODELIST": "gpu-a[01-03]",
        "SLURM_GPUS_ON_NODE": "4",
        "SLURM_SUBMIT_DIR": ROOT,
    }
    out = subprocess.run(
        ["bash", os.path.join(ROOT, "launch/slurm.sbatch"), "method=sent"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    lines = out.strip().splitlines()
    assert "ray start --head --node-ip-address=gpu-a01" in out and "--num-gpus=4" in out
    assert sum("ray start --address=gpu-a01:6379" in line for line in lines) == 2
    assert "-w gpu-a02" in out and "-w gpu-a03" in out
    assert lines[-1].startswith(
        "bash launch/submit.sh --address http://gpu-a01:8265 trainer.nnodes=3 trainer.n_gpus_per_node=4 method=sent"
    )


@pytest.mark.parametrize(
    "tool,files",
    [
        ("shellcheck", ["launch/train.sh", "launch/submit.sh", "launch/slurm.sbatch", ".ci/run"]),
        ("hadolint", ["docker/Dockerfile"]),
    ],
)
def test_static_checks(tool, files):
    import shutil
    import sys

    exe = shutil.which(tool, path=os.path.dirname(sys.executable)) or shutil.which(tool)
    assert exe, f"{tool} is installed by the test extra"
    p = subprocess.run([exe, *[os.path.join(ROOT, f) for f in files]], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_main_job_refuses_without_gpus(monkeypatch):
    from omegaconf import OmegaConf

    import recipe.sent.adapter as adapter

    cfg = OmegaConf.create({"trainer": {"nnodes": 1, "n_gpus_per_node": 1}})
    monkeypatch.setattr(adapter.ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(RuntimeError, match=r"needs 1 GPU.*offers 0.*Docker image"):
        adapter.require_accelerators(cfg)
    monkeypatch.setattr(adapter.ray, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 8.0})
    adapter.require_accelerators(OmegaConf.create({"trainer": {"nnodes": 1, "n_gpus_per_node": 8}}))


def test_cpu_backend_refuses_gpu_only_options_by_name(tmp_path):
    from hydra import compose, initialize_config_dir

    from entropy_rl.cpu.checks import check_cpu_config

    def cfg(*o):
        with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base=None):
            return compose(
                config_name="entropy_rl",
                overrides=[*o] if any(x.startswith("backend=") for x in o) else ["backend=cpu", *o],
            )

    check_cpu_config(cfg())
    with pytest.raises(ValueError, match="rollout.name='sglang'"):
        check_cpu_config(cfg("actor_rollout_ref.rollout.name=sglang"))
    # veRL's vllm rollout: only as backend=cpu_vllm configures it
    with pytest.raises(ValueError, match="enable_sleep_mode=true.*worker_extension_cls is not set"):
        check_cpu_config(cfg("actor_rollout_ref.rollout.name=vllm"))
    with pytest.raises(ValueError, match="full_determinism=true"):
        check_cpu_config(cfg("backend=cpu_vllm", "actor_rollout_ref.rollout.full_determinism=true"))
    for heads, ok in ((4, False), (2, True)):  # hidden 64: head size 16 (no CPU kernel) / 32
        model = tmp_path / f"heads{heads}"
        model.mkdir()
        (model / "config.json").write_text(
            json.dumps({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 320, "num_attention_heads": heads})
        )
        c = cfg("backend=cpu_vllm", f"actor_rollout_ref.model.path={model}")
        if ok:
            check_cpu_config(c)
        else:
            with pytest.raises(ValueError, match="head size 16.*prepare_cpu_demo.py --vllm"):
                check_cpu_config(c)
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2'"):
        check_cpu_config(cfg("actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2"))
    with pytest.raises(ValueError, match="actor.strategy='fsdp'"):
        check_cpu_config(cfg("actor_rollout_ref.actor.strategy=fsdp"))
    big = tmp_path / "big"
    big.mkdir()
    (big / "config.json").write_text(
        json.dumps({"hidden_size": 8192, "num_hidden_layers": 80, "vocab_size": 152064, "intermediate_size": 29568})
    )
    with pytest.raises(MemoryError, match="GiB"):
        check_cpu_config(cfg(f"actor_rollout_ref.model.path={big}"))


def test_failure_message_names_the_checkpoint_a_resume_would_load(tmp_path):
    """What the job prints when a Ray worker or node is lost (the 2-node test kills a raylet):
    the checkpoint named is the one the resume validates and loads, never a rejected one."""
    from omegaconf import OmegaConf
    from ray.exceptions import RayTaskError

    from recipe.sent.checkpoint import MANIFEST_FILE, SAVING_FILE, STATE_FILE, TRACKER_FILE, write_manifest
    from recipe.sent.diagnostics import explain_failure, resume_point

    root = tmp_path / "ckpt"
    cfg = OmegaConf.create({"trainer": {"default_local_dir": str(root)}})
    err = RayTaskError(
        "update_actor",
        "Traceback ...\nRuntimeError: Connection closed by peer [127.0.0.3]:1234",
        RuntimeError("Connection closed by peer"),
    )
    assert resume_point(cfg)[0] is None
    msg = explain_failure(cfg, err, node_death_wait_s=0)
    assert "the run failed in a Ray worker" in msg and "Connection closed by peer" in msg
    assert "no checkpoint was written yet" in msg

    def finished(step):  # a checkpoint as our save leaves it: state, data.pt, manifest
        d = root / f"global_step_{step}"
        d.mkdir(parents=True)
        torch.save({"hooks": {}}, d / STATE_FILE)
        torch.save({"dataloader": step}, d / "data.pt")
        write_manifest(str(d))
        (root / TRACKER_FILE).write_text(str(step))
        return d

    step7 = finished(7)
    assert resume_point(cfg)[0] == str(step7)
    msg = explain_failure(cfg, err, node_death_wait_s=0)
    assert f"last complete checkpoint: {step7};" in msg and "submit the same command" in msg
    # the tracker names step 9 but its save was cut short: the message names 7, as the resume does
    (root / "global_step_9").mkdir()
    (root / "global_step_9" / SAVING_FILE).write_text("")
    (root / TRACKER_FILE).write_text("9")
    msg = explain_failure(cfg, err, node_death_wait_s=0)
    assert f"last complete checkpoint: {step7} (the tracker's is rejected: checkpoint {root / 'global_step_9'}" in msg
    assert "the save was cut short" in msg
    # nothing finished: a resubmission starts over, and the message says so
    os.remove(step7 / MANIFEST_FILE)
    (step7 / SAVING_FILE).write_text("")
    assert "no save finished (each was cut short); a new submission starts over" in explain_failure(
        cfg, err, node_death_wait_s=0
    )
    # a finished checkpoint went bad: the resume will stop, and the message warns of it
    os.remove(step7 / SAVING_FILE)
    msg = explain_failure(cfg, err, node_death_wait_s=0)
    assert f"no usable checkpoint; a resubmission stops with: no usable checkpoint in {root}" in msg


def test_metrics_file_keeps_history_across_a_resume(tmp_path, monkeypatch):
    """veRL's file logger truncates its file on open; ours keeps the steps before the resume."""
    from recipe.sent.ray_trainer import ResumableFileLogger

    path = tmp_path / "m.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    first = [json.dumps({"step": s, "data": {"x": s}}) for s in range(1, 6)]
    path.write_text("\n".join(first) + '\n{"step": 6, "da')  # died mid-write at step 6
    log = ResumableFileLogger("p", "e")  # resumed from the step-3 checkpoint: logs step 4 next
    log.log({"x": 40}, 4)
    log.finish()
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["step"], r["data"]["x"]) for r in recs] == [(1, 1), (2, 2), (3, 3), (4, 40)]
    # a fresh run into the same file: the old records move aside, nothing is erased
    log = ResumableFileLogger("p", "e")
    log.log({"x": 0}, 1)
    log.finish()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1]
    (aside,) = [p for p in tmp_path.iterdir() if p.name != "m.jsonl"]
    assert aside.name.startswith("m.") and aside.suffix == ".jsonl"
    assert [json.loads(line)["step"] for line in aside.read_text().splitlines()] == [1, 2, 3, 4]


def _copy_launcher(tmp_path, with_venv: bool):
    """A throwaway checkout: launch/train.sh, a Makefile whose `venv` target builds a fake .venv."""
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    (repo / "launch" / "train.sh").write_text(open(os.path.join(ROOT, "launch", "train.sh")).read())
    log = tmp_path / "calls"
    stub(tmp_path / "fakepy", f'echo "venv-python $*" >> {log}\n')
    (repo / "Makefile").write_text(
        f"venv:\n\tmkdir -p .venv/bin\n\tcp {tmp_path / 'fakepy'} .venv/bin/python\n"
        f"\techo make-venv >> {log}\n\ttouch .venv/.installed\n"
    )
    if with_venv:
        subprocess.run(["make", "-s", "-C", str(repo), "venv"], check=True)
        log.unlink()
    return repo, log


@pytest.mark.parametrize("with_venv", [False, True])
def test_train_sh_sets_up_and_uses_the_project_venv(tmp_path, with_venv):
    """Without PYTHON=..., train.sh runs in .venv, building it first (make venv) when missing."""
    repo, log = _copy_launcher(tmp_path, with_venv)
    data = tmp_path / "data"
    (data / "cpu_demo").mkdir(parents=True)
    (data / "cpu_demo" / "cpu_demo.json").write_text("{}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env.update(ENTROPY_RL_DATA=str(data), CUDA_VISIBLE_DEVICES="")
    subprocess.run(
        ["bash", str(repo / "launch" / "train.sh"), "trainer.total_training_steps=1"],
        check=True,
        env=env,
        capture_output=True,
    )
    calls = log.read_text().strip().splitlines()
    assert calls[0] == "make-venv" if not with_venv else calls[0].startswith("venv-python")
    assert calls[-1].startswith("venv-python -m recipe.sent.main backend=cpu")


@pytest.mark.parametrize("script", ["launch/submit.sh", "launch/slurm.sbatch", "launch/train.sh"])
def test_scripts_have_help(script):
    out = subprocess.run(
        ["bash", os.path.join(ROOT, script), "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower() or "overrides" in out.stdout.lower()
    assert "unknown option" not in out.stdout + out.stderr
