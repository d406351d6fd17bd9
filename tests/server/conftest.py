"""Fixtures for the server tests: a model repository of tiny models, an in-process app + httpx
client, and a real server subprocess on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from onnx import TensorProto

from tests.server import models
from ziggurat.config import Config
from ziggurat.server import create_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def build_repo(root: Path) -> Path:
    models.linear(root / "linear.onnx")
    models.linear(root / "versioned" / "1" / "model.onnx", scale=1.0)
    models.linear(root / "versioned" / "2" / "model.onnx", scale=2.0)
    models.identity(root / "strings.onnx", TensorProto.STRING, ["n"])
    models.identity(root / "ints.onnx", TensorProto.INT32, ["batch", 2])
    models.identity(root / "halfs.onnx", TensorProto.FLOAT16, [2])
    models.identity(root / "flags.onnx", TensorProto.BOOL, ["batch"])
    models.row_sum(root / "rowsum.onnx")
    (root / "corrupt.onnx").write_bytes(b"\x08\x07garbage that is not a model")
    (root / "batched").mkdir()
    models.linear(root / "batched" / "1" / "model.onnx")
    (root / "batched" / "config.toml").write_text("max_batch_size = 8\n")
    return root


@pytest.fixture(scope="session")
def repo_dir(tmp_path_factory) -> Path:
    return build_repo(tmp_path_factory.mktemp("repo"))


def make_config(repo: Path, **kw) -> Config:
    base = dict(model_repository=str(repo), access_log=False, model_cache_size=20)
    base.update(kw)
    return Config(**base)


class AppClient:
    """An app started in-process plus an httpx client bound to it (no sockets)."""

    def __init__(self, config: Config):
        self.app = create_app(config)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://test"
        )

    async def __aenter__(self):
        await self.app.startup(wait=True)
        return self.client

    async def __aexit__(self, *exc):
        await self.client.aclose()
        await self.app.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m ziggurat.server ...`` on a free port; stopped (and reaped) on exit."""

    def __init__(self, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "ziggurat.server",
            *args,
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
        ]
        full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
        self.proc = subprocess.Popen(
            cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        return self.proc.returncode
