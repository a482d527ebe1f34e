"""Real `imagesmith` processes for tests: a server (API + embedded worker, or API alone) on
127.0.0.1, and remote workers on its database and storage. One launcher for the whole suite."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.backends import new_backend, run_sql, stored_keys

PYTHON = sys.executable


# Servers' ports lie below Linux's ephemeral range (32768-60999), so no outgoing connection
# takes one between this check and the server's bind, and each xdist worker picks from a block
# of its own (of 4: scripts/test runs at most 4), so two modules starting servers at once never
# pick the same one. .ci/services.sh's
# fixed ports (and their +10000 gRPC twins) are all outside 24000-27999.
FIRST_PORT, PORT_BLOCK = 24000, 1000


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    start = FIRST_PORT + (int(worker) % 4 if worker.isdigit() else 0) * PORT_BLOCK
    for _ in range(PORT_BLOCK):
        port = start + random.randrange(PORT_BLOCK)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}-{start + PORT_BLOCK - 1}")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may contain spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (/proc, Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z":
            return
        time.sleep(0.05)


def pip_install(python: str, requirement: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`pip install` into another virtualenv, one at a time: pip builds this checkout inside it
    (build/, src/imagesmith.egg-info), so two installs from xdist workers would trip over each
    other's files."""
    with open(Path(tempfile.gettempdir()) / "imagesmith-tests-pip.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run(
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "imagesmith", *args], env=env, capture_output=True, text=True, timeout=120
    )


def create_key(env: dict[str, str], org: str, project: str, *extra: str) -> str:
    result = run_cli(env, "keys", "create", "--org", org, "--project", project, *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


class Server:
    def __init__(
        self,
        data_dir: Path,
        models_dir: Path,
        backend: dict[str, str] | None = None,
        python: str = PYTHON,
        **settings: Any,
    ):
        self.python = python  # another virtualenv's interpreter: a different install
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Pass another server's `backend` to share its database and bucket (a restart, a replica).
        self.backend = backend if backend is not None else new_backend(data_dir)
        self.env = {
            **os.environ,
            "IMAGESMITH_DATA_DIR": str(data_dir),
            "IMAGESMITH_MODELS_DIR": str(models_dir),
            "HF_HUB_OFFLINE": "1",
            # Plumbing tests use the fast random-weight model; tests where the picture's
            # meaning matters pass default_model="demo" (the shipped default).
            "IMAGESMITH_DEFAULT_MODEL": "tiny-sd",
            **self.backend,
        }
        for name, value in settings.items():
            self.env[f"IMAGESMITH_{name.upper()}"] = str(value)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    def start(self, *args: str, wait_child: bool = True) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                self.python,
                "-m",
                "imagesmith",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("server did not start:\n" + self.log())
        if wait_child and "--no-worker" not in args:
            self.wait_for_log("child.ready", 120)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen {count}x in the server log:\n{self.log()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def model_child(self) -> int:
        kids = children_of(self.pid)
        # multiprocessing's spawn also starts a resource tracker: the model child is the other one.
        for kid in kids:
            cmdline = Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"spawn_main" in cmdline:
                return kid
        raise AssertionError(f"no model child among {kids}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the server and its model child, as a crash or power loss would."""
        assert self.proc is not None
        kids = children_of(self.proc.pid)
        self.proc.kill()
        self.proc.wait()
        for kid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(kid, signal.SIGKILL)
            wait_dead(kid)
        self.proc = None

    def sql(self, statement: str, **params: Any) -> list[Any]:
        return run_sql(self.env, self.data_dir, statement, **params)

    def stored_keys(self) -> set[str]:
        return stored_keys(self.env, self.data_dir)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


class WorkerProcess:
    """`imagesmith worker` on the same database and storage as an API server."""

    def __init__(self, server: Server, name: str, **settings: Any):
        self.log_path = server.data_dir / f"worker-{name}.log"
        env = dict(server.env)
        for key, value in settings.items():
            env[f"IMAGESMITH_{key.upper()}"] = str(value)
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "imagesmith", "worker"],
            env=env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "child.ready" not in self.log():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)

    def kill(self) -> None:
        """SIGKILL the worker; its model child notices the closed pipe and exits."""
        kids = children_of(self.proc.pid)
        self.proc.kill()
        self.proc.wait()
        for kid in kids:
            wait_dead(kid, timeout=15)


def wait_terminal(client: httpx.Client, generation_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data: dict[str, Any] = client.get(f"/api/v1/generations/{generation_id}").json()["data"]
        if data["status"] in ("success", "failed", "cancelled"):
            return data
        time.sleep(0.1)
    raise AssertionError(f"generation {generation_id} did not finish: {data}")
