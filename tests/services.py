"""Servers the integration tests start as separate processes: on a free port, logging to a file, stopped by the test."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list, log: Path, env: dict, new_session: bool = False, cwd: Path | None = None) -> subprocess.Popen:
    """A server process with its output in `log`; with `new_session`, leading a process group of its own (stop_group)."""
    with log.open("w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=new_session, cwd=cwd)


def mlflow_server(root: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """`mlflow server` with its SQLite store and artifacts under `root`; the process and its URI (wait_healthy before use)."""
    port = free_port()
    process = start(
        [BIN / "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow-server.db'}", "--artifacts-destination", str(root / "mlflow-artifacts")],
        root / "mlflow.log", env,
    )
    return process, f"http://127.0.0.1:{port}"


def wait_healthy(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert process.poll() is None, f"server for {url} exited with {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {seconds} s")


def stop(*processes: subprocess.Popen) -> None:
    """SIGTERM to all, then SIGKILL to any still running 30 s later."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group of a server started with new_session (it and whatever it started); once its leader
    has exited, or 30 s on, SIGKILL to whatever of the group is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
