"""How fast a wrong command fails, and whether its message names the key and the fix.

Each case is a mistake a new user makes (a typo in a knob, a value that is not allowed, a run
on a machine without a GPU, the CPU command before its demo data exists, a missing model, a
mostly-broken dataset) or a help request. Every case runs as its own process from a cold start,
as a user would type it; the table gives its wall time, exit status, the first line of what it
printed, and whether that output names the key and the fix (the strings each case expects).

    python bench/bench_failfast.py            # writes bench/results/bench_failfast.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, machine_info, table, write_json  # noqa: E402

MAIN = [sys.executable, "-m", "recipe.sent.main"]


def cases(tmp: str) -> list[dict]:
    empty = os.path.join(tmp, "no_data")
    bad_src = os.path.join(tmp, "src")
    os.makedirs(bad_src, exist_ok=True)
    with open(os.path.join(bad_src, "math500.jsonl"), "w") as f:
        for i in range(5):
            f.write(
                json.dumps(
                    {"problem": f"What is {i} + 1?", "answer": str(i + 1) if i == 0 else "", "unique_id": f"t/{i}.json"}
                )
                + "\n"
            )
    good = os.path.join(tmp, "eval.parquet")
    import pandas as pd

    pd.DataFrame(
        {
            "prompt": [[{"role": "user", "content": "1+1?"}]],
            "data_source": ["t"],
            "reward_model": [{"ground_truth": "2", "style": "rule"}],
        }
    ).to_parquet(good)
    ckpt = f"trainer.default_local_dir={tmp}/ckpt"
    return [
        dict(
            name="train.sh --help (no PYTHON: uses .venv)",
            cmd=["bash", "launch/train.sh", "--help"],
            env={"PYTHON": None},
            rc=0,
            expect=["entropy_rl.token_kl.beta_high"],
        ),
        dict(
            name="method=sent without a GPU",
            cmd=[*MAIN, "method=sent", ckpt],
            env={"CUDA_VISIBLE_DEVICES": ""},
            rc=2,
            expect=["trainer.n_gpus_per_node", "backend=cpu"],
        ),
        dict(
            name="backend=cpu before the demo exists",
            cmd=[*MAIN, "backend=cpu", "method=grpo", ckpt],
            env={"ENTROPY_RL_DATA": empty},
            rc=2,
            expect=["actor_rollout_ref.model.path", "python launch/prepare_cpu_demo.py --out"],
        ),
        dict(
            name="entropy_rl.token_kl.kl=lowvar",
            cmd=[*MAIN, "entropy_rl.token_kl.kl=lowvar"],
            rc=2,
            expect=["entropy_rl.token_kl.kl", "low_var_kl"],
        ),
        dict(
            name="+entropy_rl.scoring.n_sample=4",
            cmd=[*MAIN, "+entropy_rl.scoring.n_sample=4"],
            rc=2,
            expect=["entropy_rl.scoring.n_samples"],
        ),
        dict(
            name="entropy_rl.scoring.estimator=counts",
            cmd=[*MAIN, "entropy_rl.scoring.estimator=counts"],
            rc=2,
            expect=["entropy_rl.scoring.estimator", "'count'"],
        ),
        dict(
            name="entropy_rl.backend=cuda",
            cmd=[*MAIN, "entropy_rl.backend=cuda"],
            rc=2,
            expect=["entropy_rl.backend", "gpu, cpu"],
        ),
        dict(
            name="+entropy_rl.curriculum.num_stagse=3",
            cmd=[*MAIN, "+entropy_rl.curriculum.num_stagse=3"],
            rc=2,
            expect=["entropy_rl.curriculum.num_stages"],
        ),
        dict(
            name="entropy_rl.token_kl.beta_hihg=1",
            cmd=[*MAIN, "entropy_rl.token_kl.beta_hihg=1"],
            rc=2,
            expect=["entropy_rl.token_kl.beta_high"],
        ),
        dict(name="main --help", cmd=[*MAIN, "--help"], rc=0, expect=["method=", "entropy_rl.aer.rho", "--cfg job"]),
        dict(
            name="submit.sh --help", cmd=["bash", "launch/submit.sh", "--help"], rc=0, expect=["--address", "--dry-run"]
        ),
        dict(
            name="evaluate --model /no/such",
            cmd=[
                sys.executable,
                "-m",
                "recipe.sent.evaluate",
                "--model",
                "/no/such",
                "--backend",
                "hf",
                "--data",
                good,
                "--out",
                f"{tmp}/o.json",
            ],
            rc=2,
            expect=["--model=/no/such does not exist"],
        ),
        dict(
            name="prepare_data --skip-invalid, 4 of 5 rows bad",
            cmd=[
                sys.executable,
                "launch/prepare_data.py",
                "--source-dir",
                bad_src,
                "--out",
                f"{tmp}/out",
                "--datasets",
                "math500",
                "--skip-invalid",
                "--no-progress",
            ],
            rc=1,
            expect=["4 of 5 rows are invalid", "--max-invalid"],
        ),
    ]


def run_case(c: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT}
    for k, v in (c.get("env") or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    t0 = time.monotonic()
    p = subprocess.run(c["cmd"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    out = (p.stderr + "\n" + p.stdout).strip()
    lines = [ln for ln in out.splitlines() if ln.strip() and "cannot start" not in ln and "WARNING" not in ln]
    return {
        "case": c["name"],
        "wall_s": round(wall, 2),
        "rc": p.returncode,
        "expected_rc": c["rc"],
        "names_key_and_fix": all(e in out for e in c["expect"]),
        "first_line": (lines[0] if lines else "")[:110],
        "within_10s": wall <= 10.0,
    }


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        todo = cases(tmp)
        rows = []
        t_all = time.monotonic()
        for i, c in enumerate(todo):
            rows.append(run_case(c))
            done = time.monotonic() - t_all
            print(
                f"[failfast] {i + 1}/{len(todo)} {c['name']}: {rows[-1]['wall_s']:.1f}s "
                f"(ETA {done / (i + 1) * (len(todo) - i - 1):.0f}s)",
                flush=True,
            )
    print(table(rows, ["case", "wall_s", "rc", "expected_rc", "names_key_and_fix", "within_10s", "first_line"]))
    result = {
        "machine": machine_info(),
        "cases": rows,
        "all_within_10s": all(r["within_10s"] for r in rows),
        "all_name_key_and_fix": all(r["names_key_and_fix"] and r["rc"] == r["expected_rc"] for r in rows),
    }
    path = write_json("bench_failfast", result)
    print(
        f"[failfast] all within 10 s: {result['all_within_10s']}; every message names the key and the fix: "
        f"{result['all_name_key_and_fix']}\n[failfast] results: {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
