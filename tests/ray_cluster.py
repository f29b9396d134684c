"""A multi-node Ray cluster on this one machine, for the cluster-path tests.

Each node is its own `ray start` (head, then workers joining it), as on a real cluster, with
its own loopback address: head 127.0.0.2, then 127.0.0.3, ... (all of 127/8 is loopback on
Linux, so no traffic leaves the machine). Not 127.0.0.1: `ray start` rewrites exactly
127.0.0.1 / localhost to the machine's routable address (``resolve_ip_for_localhost``). Every
node gets its own ports; the whole cluster shares one fresh ``--temp-dir``, which marks every
process it starts, so ``teardown`` stops exactly those processes (never another Ray here).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import psutil

BIN = os.path.dirname(sys.executable)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports free on ``host`` right now."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind((host, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class Node:
    name: str
    ip: str
    node_manager_port: int
    raylet_pid: int


class LoopbackCluster:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        # Unix socket paths under the temp dir must stay short (< 108 bytes).
        self.temp_dir = tempfile.mkdtemp(prefix="erl-ray-", dir="/tmp")
        base = {k: v for k, v in (env or os.environ).items() if not k.startswith("RAY_")}
        base.pop("CUDA_VISIBLE_DEVICES", None)
        base["PATH"] = f"{BIN}:{base.get('PATH', '')}"
        base["RAY_AUTH_MODE"] = "disabled"  # loopback-only test cluster; Ray's CLI wants a token otherwise
        self.env = base
        self.nodes: list[Node] = []
        self.gcs_port = self.dashboard_port = 0
        self._worker_port = 20000 + (os.getpid() % 200) * 100

    @property
    def address(self) -> str:
        """The job-submission (dashboard) address for `ray job submit --address`."""
        return f"http://{self.head_ip}:{self.dashboard_port}"

    @property
    def head_ip(self) -> str:
        return self.nodes[0].ip

    def _start(self, name: str, head: bool, num_cpus: int, num_gpus: int) -> Node:
        ip = f"127.0.0.{len(self.nodes) + 2}"
        p = free_ports(6, ip)
        cmd = [
            f"{BIN}/ray",
            "start",
            f"--node-ip-address={ip}",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={num_cpus}",
            f"--num-gpus={num_gpus}",
            f"--node-manager-port={p[0]}",
            f"--object-manager-port={p[1]}",
            f"--dashboard-agent-listen-port={p[2]}",
            f"--dashboard-agent-grpc-port={p[3]}",
            f"--metrics-export-port={p[4]}",
            f"--runtime-env-agent-port={p[5]}",
            f"--min-worker-port={self._worker_port}",
            f"--max-worker-port={self._worker_port + 99}",
            "--disable-usage-stats",
        ]
        self._worker_port += 100
        if head:
            self.gcs_port, self.dashboard_port = free_ports(2, ip)
            cmd += [
                "--head",
                f"--port={self.gcs_port}",
                f"--dashboard-host={ip}",
                f"--dashboard-port={self.dashboard_port}",
            ]
        else:
            cmd += [f"--address={self.head_ip}:{self.gcs_port}"]
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise RuntimeError(f"`ray start` ({name}) failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        node = Node(name, ip, p[0], self._raylet_pid(p[0]))
        self.nodes.append(node)
        return node

    def start_head(self, num_cpus: int = 6, num_gpus: int = 1) -> Node:
        return self._start("head", True, num_cpus, num_gpus)

    def add_node(self, name: str, num_cpus: int = 6, num_gpus: int = 1) -> Node:
        return self._start(name, False, num_cpus, num_gpus)

    def _raylet_pid(self, node_manager_port: int) -> int:
        for proc in self.processes():
            cmd = proc.info["cmdline"] or []
            if cmd and cmd[0].endswith("/raylet") and f"--node_manager_port={node_manager_port}" in cmd:
                return proc.pid
        raise RuntimeError(f"no raylet with node manager port {node_manager_port}")

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: those naming its temp dir, and their descendants."""
        found = {}
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if self.temp_dir in " ".join(proc.info["cmdline"] or []):
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        child.info = {"cmdline": child.cmdline()}
                        found[child.pid] = child
            except psutil.Error:
                continue
        return list(found.values())

    def kill_raylet(self, node: Node) -> None:
        psutil.Process(node.raylet_pid).kill()

    def teardown(self) -> None:
        procs = self.processes()
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """The `ray` CLI against this cluster (stdout and stderr together in ``.stdout``)."""
        return subprocess.run(
            [f"{BIN}/ray", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )

    def job_status(self, job_id: str) -> str:
        from ray.job_submission import JobSubmissionClient

        return str(JobSubmissionClient(self.address).get_job_status(job_id).value)

    def wait_job(self, job_id: str, timeout: float) -> str:
        """Poll until the job ends or ``timeout`` passes; returns the last status seen."""
        deadline = time.time() + timeout
        while True:
            status = self.job_status(job_id)
            if status in ("SUCCEEDED", "FAILED", "STOPPED") or time.time() >= deadline:
                return status
            time.sleep(2)
