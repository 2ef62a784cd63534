"""A TMI stand-in: a small HTTP service that plays the TMI server for tests, Molecule and the demo.

Not part of the collection build. It reads the config file the app_config role renders (the
runbook's config.yaml: ``database``, ``redis``, ``cache``), and serves the runbook's endpoints
from the real PostgreSQL, caching through the real Redis with the configured TTLs, so Redis'
keyspace hit and miss counters mean what they would mean with TMI:

- ``GET /health``: 200 when PostgreSQL (and Redis, when the cache is enabled) answer, else 503
  with the reason; ``GET /ready``: 200 when the schema is readable and not dirty, else 503.
- ``POST /admin/maintenance/enable`` and ``/disable``, ``GET /admin/maintenance``: maintenance
  mode, kept in the state directory so that it survives a restart.
- ``POST /admin/cache/warm``: loads the granular lists of the first 1000 threat models (by creation)
  into the cache.
- ``GET /admin/config``: the effective configuration without secrets (tests read it).
- ``GET /threat_models/{id}/threats|documents|sources``: the granular API (503 in maintenance).

Everything but /health and /ready needs ``Authorization: Bearer <token>``, the token being the
content of ``--token-file``. Lifecycle: ``python -m tmi_testenv standin start|stop|restart|status``
with a state directory holding the pid file, the log and the maintenance flag; ``start`` returns
once the port answers (or fails with the log tail), so the app_config role's ``command`` service
manager can drive it like systemd.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg2
import redis
import yaml

_GRANULAR = re.compile(r"^/threat_models/([0-9a-fA-F-]{36})/(threats|documents|sources)$")
WARM_LIMIT = 1000  # threat models POST /admin/cache/warm loads

_LIST_SQL = {
    "threats": "SELECT id, name, severity, status, created_at FROM threats "
               "WHERE threat_model_id = %s ORDER BY created_at DESC, id LIMIT 100",
    "documents": "SELECT id, name, url, created_at FROM documents WHERE threat_model_id = %s ORDER BY created_at, id",
    "sources": "SELECT id, name, url, type, created_at FROM sources WHERE threat_model_id = %s ORDER BY created_at, id",
}


def parse_ttl(value: object, default: int) -> int:
    """'300s', '10m', '1h' or a number of seconds -> seconds."""
    if value is None:
        return default
    text = str(value).strip()
    match = re.fullmatch(r"(\d+)\s*([smh]?)", text)
    if not match:
        raise ValueError(f"cache TTL {text!r} is not a duration like 300s, 10m or 1h")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


class App:
    """The service state: configuration, connections and the maintenance flag."""

    def __init__(self, config_path: Path, state_dir: Path, token: str):
        self.config_path = config_path
        self.state_dir = state_dir
        self.token = token
        config = yaml.safe_load(config_path.read_text()) or {}
        self.database = config.get("database") or {}
        self.redis_conf = config.get("redis") or {}
        cache = config.get("cache") or {}
        self.cache_enabled = bool(cache.get("enabled", False))
        self.ttls = {"default": parse_ttl(cache.get("default_ttl"), 300),
                     "threat_model": parse_ttl(cache.get("threat_model_ttl"), 600),
                     "auth_data": parse_ttl(cache.get("auth_data_ttl"), 900)}
        self._local = threading.local()
        self._redis = None

    # -- connections ------------------------------------------------------------------
    def db(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg2.connect(host=self.database.get("host"), port=self.database.get("port"),
                                    dbname=self.database.get("name"), user=self.database.get("user"),
                                    password=self.database.get("password"), connect_timeout=3,
                                    application_name="tmi-standin")
            conn.autocommit = True
            self._local.conn = conn
        return conn

    def query(self, sql: str, params: tuple = ()) -> list[dict]:
        try:
            with self.db().cursor() as cur:
                cur.execute(sql, params)
                names = [c.name for c in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except Exception:
            self._local.conn = None
            raise

    def redis(self):
        if self._redis is None:
            self._redis = redis.Redis(host=self.redis_conf.get("host"), port=int(self.redis_conf.get("port", 6379)),
                                      password=self.redis_conf.get("password") or None,
                                      db=int(self.redis_conf.get("db", 0)), socket_timeout=3)
        return self._redis

    # -- state --------------------------------------------------------------------------
    @property
    def _maintenance_file(self) -> Path:
        return self.state_dir / "maintenance"

    def in_maintenance(self) -> bool:
        return self._maintenance_file.exists()

    def set_maintenance(self, enabled: bool) -> bool:
        changed = enabled != self.in_maintenance()
        if enabled:
            self._maintenance_file.write_text("on\n")
        else:
            self._maintenance_file.unlink(missing_ok=True)
        return changed

    # -- behaviour ----------------------------------------------------------------------
    def health(self) -> tuple[int, dict]:
        problems = {}
        try:
            self.query("SELECT 1")
        except (psycopg2.Error, OSError) as error:  # the reason is the answer
            problems["database"] = str(error).strip()
        if self.cache_enabled:
            try:
                self.redis().ping()
            except (redis.RedisError, OSError) as error:
                problems["redis"] = str(error).strip()
        if problems:
            return 503, {"status": "unhealthy", **problems}
        return 200, {"status": "ok"}

    def ready(self) -> tuple[int, dict]:
        try:
            rows = self.query("SELECT version, dirty FROM schema_migrations")
        except (psycopg2.Error, OSError) as error:
            return 503, {"status": "not ready", "database": str(error).strip()}
        if not rows or rows[0]["dirty"]:
            return 503, {"status": "not ready", "schema": rows[0] if rows else "no version"}
        return 200, {"status": "ready", "schema_version": rows[0]["version"]}

    def granular(self, threat_model_id: str, kind: str) -> tuple[int, list]:
        key = f"cache:threat_model:{threat_model_id}:{kind}"
        if self.cache_enabled:
            cached = self.redis().get(key)
            if cached is not None:
                return 200, json.loads(cached)
        if not self.query("SELECT 1 FROM threat_models WHERE id = %s", (threat_model_id,)):
            return 404, {"error": f"threat model {threat_model_id} not found"}
        rows = json.loads(json.dumps(self.query(_LIST_SQL[kind], (threat_model_id,)), default=str))
        if self.cache_enabled:
            self.redis().set(key, json.dumps(rows), ex=self.ttls["threat_model"])
        return 200, rows

    def warm(self) -> dict:
        if not self.cache_enabled:
            return {"warmed": 0, "cache": "disabled"}
        # A bounded warm-up, so that it answers in about a second whatever the database's size.
        ids = [row["id"] for row in self.query("SELECT id::text AS id FROM threat_models "
                                               "ORDER BY created_at, id LIMIT %s", (WARM_LIMIT,))]
        pipe = self.redis().pipeline(transaction=False)
        for kind, sql in _LIST_SQL.items():
            for tm_id in ids:
                rows = json.loads(json.dumps(self.query(sql, (tm_id,)), default=str))
                pipe.set(f"cache:threat_model:{tm_id}:{kind}", json.dumps(rows), ex=self.ttls["threat_model"])
        pipe.execute()
        return {"warmed": len(ids) * len(_LIST_SQL)}

    def public_config(self) -> dict:
        return {"database": {k: v for k, v in self.database.items() if k != "password"},
                "redis": {k: v for k, v in self.redis_conf.items() if k != "password"},
                "cache": {"enabled": self.cache_enabled, "ttl_seconds": self.ttls},
                "pid": os.getpid()}


class Handler(BaseHTTPRequestHandler):
    app: App
    server_version = "tmi-standin/1"

    def log_message(self, fmt: str, *args: object) -> None:  # one line per request, no headers
        sys.stderr.write(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        return header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), self.app.token.encode())

    def _dispatch(self) -> tuple[int, object]:
        path = self.path.split("?", 1)[0]
        if self.command == "GET" and path == "/health":
            return self.app.health()
        if self.command == "GET" and path == "/ready":
            return self.app.ready()
        if not self._authorized():
            return 401, {"error": "missing or wrong bearer token"}
        if path == "/admin/maintenance" and self.command == "GET":
            return 200, {"maintenance": self.app.in_maintenance()}
        if path in ("/admin/maintenance/enable", "/admin/maintenance/disable") and self.command == "POST":
            enabled = path.endswith("enable")
            return 200, {"maintenance": enabled, "changed": self.app.set_maintenance(enabled)}
        if path == "/admin/config" and self.command == "GET":
            return 200, self.app.public_config()
        if self.app.in_maintenance():
            return 503, {"error": "maintenance mode"}
        if path == "/admin/cache/warm" and self.command == "POST":
            return 200, self.app.warm()
        match = _GRANULAR.match(path)
        if match and self.command == "GET":
            return self.app.granular(match.group(1), match.group(2))
        return 404, {"error": f"no route {self.command} {path}"}

    def _handle(self) -> None:
        try:
            status, body = self._dispatch()
        except Exception as error:  # noqa: BLE001 - a server answers every request, a 500 with the reason
            status, body = 500, {"error": str(error).strip()}
        self._send(status, body)

    do_GET = _handle
    do_POST = _handle


def serve(config: Path, state_dir: Path, token_file: Path, port: int) -> None:
    app = App(config, state_dir, token_file.read_text().strip())
    handler = type("BoundHandler", (Handler,), {"app": app})
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    httpd.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    print(f"tmi-standin pid {os.getpid()} serving 127.0.0.1:{port} with {config}", file=sys.stderr, flush=True)
    httpd.serve_forever()


# -- lifecycle (what a service manager does) -----------------------------------------------
def _pid(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / "pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _exists(pid) else None


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    if _pid(state_dir):
        print("tmi-standin: already running")
        return 0
    log = open(state_dir / "standin.log", "ab")
    child = subprocess.Popen([sys.executable, "-m", "tmi_testenv", "standin", "serve", "--config", args.config,
                              "--state-dir", args.state_dir, "--token-file", args.token_file, "--port", str(args.port)],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    (state_dir / "pid").write_text(str(child.pid))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = (state_dir / "standin.log").read_text(errors="replace")[-1500:]
            print(f"tmi-standin: exited with {child.returncode} on start:\n{tail}", file=sys.stderr)
            return 1
        if _listening(args.port):
            print(f"tmi-standin: started, pid {child.pid}")
            return 0
        time.sleep(0.05)
    print("tmi-standin: did not listen within 15s", file=sys.stderr)
    return 1


def stop(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    pid = _pid(state_dir)
    if pid is None:
        print("tmi-standin: not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _exists(pid):
        os.kill(pid, signal.SIGKILL)
    (state_dir / "pid").unlink(missing_ok=True)
    print(f"tmi-standin: stopped pid {pid}")
    return 0


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (its parent exited) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def restart(args: argparse.Namespace) -> int:
    stop(args)
    return start(args)


def status(args: argparse.Namespace) -> int:
    pid = _pid(Path(args.state_dir))
    print(f"tmi-standin: {'running, pid ' + str(pid) if pid else 'stopped'}")
    return 0 if pid else 3


def add_parser(sub) -> None:
    parser = sub.add_parser("standin", help="the TMI stand-in HTTP service (start|stop|restart|status|serve)")
    parser.add_argument("action", choices=["start", "stop", "restart", "status", "serve"])
    parser.add_argument("--config", default=os.environ.get("TMI_APP_CONFIG"),
                        help="config.yaml (default $TMI_APP_CONFIG)")
    parser.add_argument("--state-dir", default=os.environ.get("TMI_APP_STATE_DIR"),
                        help="pid file, log and maintenance flag (default $TMI_APP_STATE_DIR)")
    parser.add_argument("--token-file", default=os.environ.get("TMI_APP_TOKEN_FILE"),
                        help="file holding the bearer token (default $TMI_APP_TOKEN_FILE)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("TMI_APP_PORT", "0") or 0),
                        help="loopback port (default $TMI_APP_PORT)")
    parser.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    missing = [name for name in ("config", "state_dir", "token_file", "port") if not getattr(args, name)]
    if missing:
        options = ", --".join(m.replace("_", "-") for m in missing)
        sys.exit(f"tmi-standin: give --{options} (or the TMI_APP_* environment)")
    if args.action == "serve":
        serve(Path(args.config), Path(args.state_dir), Path(args.token_file), args.port)
        return 0
    return {"start": start, "stop": stop, "restart": restart, "status": status}[args.action](args)


def write_config(path: Path, pg_env: dict[str, str], redis_env: dict[str, str], cache_enabled: bool = False) -> None:
    """The config a TMI install had before the migration (the runbook's shape, cache off by default)."""
    config = {"database": {"host": pg_env["TMI_PG_HOST"], "port": int(pg_env["TMI_PG_PORT"]),
                           "name": pg_env["TMI_PG_DB"], "user": pg_env["TMI_PG_USER"],
                           "password": pg_env["TMI_PG_PASSWORD"]},
              "redis": {"host": redis_env["TMI_REDIS_HOST"], "port": int(redis_env["TMI_REDIS_PORT"]),
                        "password": redis_env["TMI_REDIS_PASSWORD"], "db": 0},
              "cache": {"enabled": cache_enabled}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o640)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


class StandIn:
    """Drives the stand-in through the same command line the app_config role's command manager uses."""

    def __init__(self, base_dir: Path, port: int | None = None):
        from .servers import free_port

        self.base_dir = Path(base_dir)
        self.port = port or free_port()
        self.config = self.base_dir / "etc" / "config.yaml"
        self.state_dir = self.base_dir / "state"
        self.token_file = self.base_dir / "token"
        self.token = "standin-" + os.urandom(12).hex()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.token_file.touch(mode=0o600)
        self.token_file.write_text(self.token)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ctl_prefix(self) -> list[str]:
        """The command line up to the action: what a service manager is given (action appended)."""
        return [sys.executable, "-m", "tmi_testenv", "standin", "--config", str(self.config),
                "--state-dir", str(self.state_dir), "--token-file", str(self.token_file), "--port", str(self.port)]

    def control_command(self, action: str) -> list[str]:
        return [*self._ctl_prefix(), action]

    def control(self, action: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.control_command(action), capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})

    def start(self) -> StandIn:
        done = self.control("start")
        if done.returncode:
            raise RuntimeError(f"stand-in did not start: {done.stdout}{done.stderr}")
        return self

    def stop(self) -> None:
        self.control("stop")

    def pid(self) -> int | None:
        return _pid(self.state_dir)

    def request(self, method: str, path: str, token: str | None = "") -> tuple[int, object]:
        import urllib.error
        import urllib.request

        headers = {} if token is None else {"Authorization": f"Bearer {token or self.token}"}
        req = urllib.request.Request(self.url + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def env(self) -> dict[str, str]:
        tests_dir = Path(__file__).resolve().parent.parent
        ctl = " ".join(shlex.quote(part) for part in ["env", f"PYTHONPATH={tests_dir}", *self._ctl_prefix()])
        return {"TMI_APP_CTL": ctl, "TMI_APP_URL": self.url, "TMI_APP_PORT": str(self.port),
                "TMI_APP_CONFIG": str(self.config),
                "TMI_APP_STATE_DIR": str(self.state_dir), "TMI_APP_TOKEN_FILE": str(self.token_file),
                "TMI_APP_TOKEN": self.token}
