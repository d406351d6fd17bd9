"""The server tests' fixtures (a repository of tiny models, asyncio for anyio) reused here."""

from tests.server.conftest import anyio_backend, repo_dir  # noqa: F401
