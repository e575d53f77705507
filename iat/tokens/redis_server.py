"""A real ``redis-server`` process on a free 127.0.0.1 port, for tests, benchmarks and local runs.

The binary comes from the system (Debian's ``redis-server``, which ``make setup`` installs); nothing is
downloaded. The server keeps its files in a temporary folder and is stopped (and its folder removed) on exit.
``appendfsync`` is ``always`` by default: an ingest the server acknowledged survives a crash of any client, and
of the server itself.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``with RedisServer() as server: client = server.client()``; ``server.url`` for other processes."""

    def __init__(self, binary: str = "redis-server", appendonly: bool = True, maxmemory: str | None = None) -> None:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(f"{binary} is not installed: `make setup` installs it (apt-get install redis-server)")
        self.binary, self.appendonly, self.maxmemory = path, appendonly, maxmemory
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.dir = Path(tempfile.mkdtemp(prefix="iat-redis-"))
        self.port = _free_port()
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        if self.maxmemory:
            args += ["--maxmemory", self.maxmemory]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {self.proc.stderr.read().decode()[-500:] if self.proc.stderr else ''}")
            try:
                if self.client().ping():
                    return self
            except Exception:  # noqa: BLE001 - not accepting connections yet
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on 127.0.0.1:{self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.proc = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
