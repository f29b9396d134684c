"""The library's layering holds: the core math modules import neither Ray, matplotlib nor
the orchestration (``recipe``, ``launch``, ``bench``) themselves; nothing in ``entropy_rl``
imports the orchestration at all."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CORE = ["config", "answers", "reward", "rows", "semantic_entropy", "curriculum", "losses", "aer", "evaluation", "io"]
NEVER_IN_CORE = ("ray", "matplotlib", "recipe", "launch", "bench")
NEVER_IN_LIBRARY = ("recipe", "launch", "bench")


def imported_modules(path: str) -> set[str]:
    """Top-level names of every module a file imports, at any depth of its code."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("module", CORE)
def test_core_math_imports_no_ray_plotting_or_orchestration(module):
    bad = imported_modules(os.path.join(ROOT, "entropy_rl", f"{module}.py")) & set(NEVER_IN_CORE)
    assert not bad, f"entropy_rl/{module}.py imports {sorted(bad)}"


def test_no_library_module_imports_the_orchestration():
    for folder, _, files in os.walk(os.path.join(ROOT, "entropy_rl")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                bad = imported_modules(path) & set(NEVER_IN_LIBRARY)
                assert not bad, f"{os.path.relpath(path, ROOT)} imports {sorted(bad)}"


def test_the_knobs_import_without_torch_or_verl():
    """--help and the config checks read the knobs in well under a second."""
    import subprocess
    import sys

    code = (
        "import sys, entropy_rl.config, recipe.sent.config; "
        "print(sorted(m for m in ('torch', 'verl', 'ray') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    ).stdout.strip()
    assert out == "[]"
