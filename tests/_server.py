"""Start and stop the real server (uvicorn in a subprocess, on 127.0.0.1 only) for the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(path: Path, store: Path, *sets: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "reflectlm.cli", "serve", str(path), "--port", str(port),
           "--set", f'serve.store="{store}"', "--set", "serve.threads=1", *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready in 90 s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_mid_feedback(proc: subprocess.Popen, url: str, ids: list[str], at_least: int = 40) -> list[int]:
    """Stream corrections from 4 clients and SIGKILL the server once `at_least` are acknowledged,
    with requests still in flight; returns the feedback ids the server acknowledged (201)."""
    import threading

    acked: list[int] = []
    stop_flag = threading.Event()

    def stream():
        with httpx.Client(timeout=5) as c:
            i = 0
            while not stop_flag.is_set():
                try:
                    r = c.post(url + "/v1/feedback", json={"prediction_id": ids[i % len(ids)], "label": "pos"})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 201:
                    acked.append(r.json()["feedback_id"])
                i += 1

    workers = [threading.Thread(target=stream) for _ in range(4)]
    for w in workers:
        w.start()
    deadline = time.time() + 30
    while len(acked) < at_least and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: requests are in flight
    proc.wait()
    stop_flag.set()
    for w in workers:
        w.join(10)
    return acked
