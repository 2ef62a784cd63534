"""A TMI stand-in: a small HTTP service that plays the TMI server for tests, Molecule and the demo.

Not part of the collection build. It reads the config file the app_config role renders (the
runbook's config.yaml: ``database``, ``redis``, ``cache``), and serves the runbook's endpoints
from the real PostgreSQL, caching through the real Redis with the configured TTLs, so Redis'
keyspace hit and miss counters mean what they would mean with TMI:

- ``GET /health``: 200 when PostgreSQL (and Redis, when the cache is enabled) answer, else 503
  with the reason; ``GET /ready``: 200 when the schema is readable and not dirty, else 503.
- ``POST /admin/maintenance/enable`` and ``/disable``, ``GET /admin/maintenance``: maintenance
  mode, kept in a file so that it survives a restart: ``maintenance`` in the state directory, or
  ``--maintenance-file``, which several stand-ins serving one deployment share (as TMI instances
  behind one load balancer share one switch).
- ``POST /admin/cache/warm``: loads the granular lists of the first 1000 threat models (by creation)
  into the cache.
- ``GET /admin/config``: the effective configuration without secrets (tests read it).
- ``GET /threat_models/{id}/threats|documents|sources``: the granular API (503 in maintenance).
- ``POST /threat_models/{id}/threats`` with a JSON body ``{"name": ..., "severity": ...}``
  (``description`` optional; severity one of the schema's, default ``Unknown``): creates a threat,
  201 with ``{"id": ...}``; 400 for a bad body, 404 for an unknown threat model.
- ``GET /threat_models/{id}/threats/{threat_id}/metadata``: the threat's metadata keys and values.
- ``PUT /threat_models/{id}/threats/{threat_id}/metadata/{key}`` with ``{"value": ...}``: sets a
  metadata key of the threat, 201 when it creates the key, 200 when it replaces the value; 400 for
  a key or value schema 17 would refuse (so that rows written at 15 pass 000017), 404 for an unknown
  threat. The upsert is an UPDATE, then an INSERT when nothing was updated, under a transaction-level
  advisory lock on (threat, key): it works at schema 15 (no unique constraint on metadata) and 17
  (UNIQUE (entity_type, entity_id, key)) alike, and concurrent requests never insert a key twice.

The write endpoints answer 503 in maintenance, like the reads, and delete the cache entry they
change (the threat model's threat list; the threat's metadata list) after their transaction commits.

Database access: a pool of at most ``POOL_SIZE`` connections shared by the request threads (one
request holds one connection; a request finding none free waits for one up to the statement
timeout). Each statement may wait up to ``database.statement_timeout`` of the config (default
``30s``; a lock wait counts): a request queued behind a migration's lock waits rather than failing
at once, and answers 503 with the reason when the time is up. A connection that broke (the server
restarted, the database was swapped or dropped under it, the backend was terminated) is replaced and
the request retried once on a fresh one; every request is safe to retry (a created threat's id is
chosen before the INSERT, which does nothing when that id exists). A database that cannot be reached
answers 503 with the reason.

Everything but /health and /ready needs ``Authorization: Bearer <token>``, the token being the
content of ``--token-file``. Lifecycle: ``python -m tmi_testenv standin start|stop|restart|status``
with a state directory holding the pid file, the log and the maintenance flag; ``start`` returns
once the port answers (or fails with the log tail), so the app_config role's ``command`` service
manager can drive it like systemd. ``stop`` is graceful: the port refuses new connections at once
and the requests under way are answered before the process exits (killed after 10 s).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg2
import psycopg2.extensions
import redis
import yaml

_UUID = r"([0-9a-fA-F-]{36})"
_GRANULAR = re.compile(rf"^/threat_models/{_UUID}/(threats|documents|sources)$")
_THREAT_METADATA = re.compile(rf"^/threat_models/{_UUID}/threats/{_UUID}/metadata(?:/([^/]*))?$")
WARM_LIMIT = 1000  # threat models POST /admin/cache/warm loads
POOL_SIZE = 32  # database connections the request threads share
STATEMENT_TIMEOUT = "30s"  # how long a statement may wait (for a lock too) unless the config says otherwise
SEVERITIES = ("Unknown", "None", "Low", "Medium", "High", "Critical")  # the threats table's CHECK
_METADATA_KEY = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")  # schema 17's key rules (CHECK and varchar(128))
MAX_METADATA_VALUE = 65535  # schema 17's CHECK on metadata.value
MAX_BODY = 1 << 20

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


class RequestError(Exception):
    """A request the application refuses: the status and the reason go to the client."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class Pool:
    """At most ``size`` connections shared by the request threads, opened on demand.

    psycopg2 connections are thread-safe only one transaction at a time, so a request checks one out
    for its whole transaction. A connection that broke is closed and not given back.
    """

    def __init__(self, connect, size: int, wait: float):
        self._connect, self._wait = connect, wait
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    def take(self):
        """A connection for one transaction (give it back with give()); waits for a free one."""
        if not self._slots.acquire(timeout=self._wait):
            raise RequestError(503, f"database busy: no free connection of {POOL_SIZE} within {self._wait:.0f} s")
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        try:
            return self._connect()
        except BaseException:
            self._slots.release()
            raise

    def give(self, conn) -> None:
        if not conn.closed:
            self._idle.put(conn)
        self._slots.release()

    def close(self) -> None:
        """Close the idle connections."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def broken(conn, error: Exception) -> bool:
    """Whether an error means the connection is gone (retry on a new one) rather than a refused statement."""
    return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)) and bool(conn.closed)


class App:
    """The service state: configuration, connections and the maintenance flag."""

    def __init__(self, config_path: Path, state_dir: Path, token: str, maintenance_file: Path | None = None):
        self.config_path = config_path
        self.state_dir = state_dir
        self._maintenance_file = maintenance_file or state_dir / "maintenance"
        self.token = token
        config = yaml.safe_load(config_path.read_text()) or {}
        self.database = config.get("database") or {}
        self.redis_conf = config.get("redis") or {}
        cache = config.get("cache") or {}
        self.cache_enabled = bool(cache.get("enabled", False))
        self.ttls = {"default": parse_ttl(cache.get("default_ttl"), 300),
                     "threat_model": parse_ttl(cache.get("threat_model_ttl"), 600),
                     "auth_data": parse_ttl(cache.get("auth_data_ttl"), 900)}
        self.statement_timeout = parse_ttl(self.database.get("statement_timeout"), parse_ttl(STATEMENT_TIMEOUT, 30))
        self.pool = Pool(self._connect, POOL_SIZE, self.statement_timeout)
        self._redis = None

    # -- connections ------------------------------------------------------------------
    def _connect(self):
        try:
            return psycopg2.connect(host=self.database.get("host"), port=self.database.get("port"),
                                    dbname=self.database.get("name"), user=self.database.get("user"),
                                    password=self.database.get("password"), connect_timeout=3,
                                    application_name="tmi-standin",
                                    options=f"-c statement_timeout={self.statement_timeout * 1000}")
        except psycopg2.OperationalError as error:
            raise RequestError(503, f"database unavailable: {str(error).strip()}") from None

    def transaction(self, work):
        """work(cursor) in one transaction on a pooled connection; its result. A connection that broke
        is replaced and the work retried once; a statement that waited out the timeout answers 503."""
        for attempt in (1, 2):
            conn = self.pool.take()
            try:
                with conn, conn.cursor() as cur:
                    return work(cur)
            except psycopg2.extensions.QueryCanceledError as error:
                raise RequestError(503, f"database busy: {str(error).strip()} "
                                        f"(statement_timeout {self.statement_timeout} s)") from None
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                if not broken(conn, error):
                    raise
                # Whatever broke this one (a restart, a terminated backend) broke the idle ones too.
                self.pool.close()
                if attempt == 2:
                    raise RequestError(503, f"database unavailable: {str(error).strip()}") from None
            finally:
                self.pool.give(conn)
        raise AssertionError("unreachable")

    def query(self, sql: str, params: tuple = ()) -> list[dict]:
        def rows(cur) -> list[dict]:
            cur.execute(sql, params)
            names = [c.name for c in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

        return self.transaction(rows)

    def redis(self):
        if self._redis is None:
            self._redis = redis.Redis(host=self.redis_conf.get("host"), port=int(self.redis_conf.get("port", 6379)),
                                      password=self.redis_conf.get("password") or None,
                                      db=int(self.redis_conf.get("db", 0)), socket_timeout=3)
        return self._redis

    # -- state --------------------------------------------------------------------------
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
        except (psycopg2.Error, OSError, RequestError) as error:  # the reason is the answer
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
        except (psycopg2.Error, OSError, RequestError) as error:
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

    def create_threat(self, threat_model_id: str, body: dict) -> tuple[int, dict]:
        name, severity = body.get("name"), body.get("severity", "Unknown")
        description = body.get("description")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise RequestError(400, "name: a non-empty string of at most 255 characters is required")
        if severity not in SEVERITIES:
            raise RequestError(400, f"severity: one of {', '.join(SEVERITIES)}")
        if description is not None and not isinstance(description, str):
            raise RequestError(400, "description: a string")
        threat_id = str(uuid.uuid4())  # chosen here, so that a retried INSERT does nothing twice

        def insert(cur) -> bool:
            cur.execute("INSERT INTO threats (id, threat_model_id, name, severity, description) "
                        "SELECT %s, id, %s, %s, %s FROM threat_models WHERE id = %s "
                        "ON CONFLICT (id) DO NOTHING RETURNING id",
                        (threat_id, name, severity, description, threat_model_id))
            if cur.fetchone():
                return True
            cur.execute("SELECT 1 FROM threats WHERE id = %s", (threat_id,))  # inserted by the first attempt
            return cur.fetchone() is not None

        if not self.transaction(insert):
            raise RequestError(404, f"threat model {threat_model_id} not found")
        self.invalidate(f"cache:threat_model:{threat_model_id}:threats")
        return 201, {"id": threat_id}

    def threat_metadata(self, threat_model_id: str, threat_id: str) -> tuple[int, object]:
        key = f"cache:threat:{threat_id}:metadata"
        if self.cache_enabled:
            cached = self.redis().get(key)
            if cached is not None:
                return 200, json.loads(cached)

        def read(cur):
            cur.execute("SELECT 1 FROM threats WHERE id = %s AND threat_model_id = %s", (threat_id, threat_model_id))
            if cur.fetchone() is None:
                return None
            cur.execute("SELECT key, value FROM metadata WHERE entity_type = 'threat' AND entity_id = %s "
                        "ORDER BY key, id", (threat_id,))
            return [{"key": k, "value": v} for k, v in cur.fetchall()]

        rows = self.transaction(read)
        if rows is None:
            raise RequestError(404, f"threat {threat_id} of threat model {threat_model_id} not found")
        if self.cache_enabled:
            self.redis().set(key, json.dumps(rows), ex=self.ttls["default"])
        return 200, rows

    def set_threat_metadata(self, threat_model_id: str, threat_id: str, key: str, body: dict) -> tuple[int, dict]:
        value = body.get("value")
        if not _METADATA_KEY.match(key):
            raise RequestError(400, "key: 1 to 128 characters of a-z, A-Z, 0-9, _ and -")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            raise RequestError(400, f"value: a string of at most {MAX_METADATA_VALUE} characters is required")

        def upsert(cur):
            # No ON CONFLICT: the unique constraint it would need exists only from schema 17. The advisory
            # lock makes UPDATE-then-INSERT safe between concurrent requests for the same key at 15 too.
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        (f"metadata:threat:{threat_id}:{key}",))
            cur.execute("SELECT 1 FROM threats WHERE id = %s AND threat_model_id = %s", (threat_id, threat_model_id))
            if cur.fetchone() is None:
                return None
            cur.execute("UPDATE metadata SET value = %s, modified_at = now() "
                        "WHERE entity_type = 'threat' AND entity_id = %s AND key = %s", (value, threat_id, key))
            if cur.rowcount:
                return False
            cur.execute("INSERT INTO metadata (entity_type, entity_id, key, value) VALUES ('threat', %s, %s, %s)",
                        (threat_id, key, value))
            return True

        created = self.transaction(upsert)
        if created is None:
            raise RequestError(404, f"threat {threat_id} of threat model {threat_model_id} not found")
        self.invalidate(f"cache:threat:{threat_id}:metadata")
        return (201 if created else 200), {"key": key, "value": value, "created": created}

    def invalidate(self, key: str) -> None:
        if self.cache_enabled:
            self.redis().delete(key)

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

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise RequestError(413, f"body larger than {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as error:
            raise RequestError(400, f"body is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "body: a JSON object is required")
        return body

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
        if match and match.group(2) == "threats" and self.command == "POST":
            return self.app.create_threat(match.group(1), self._body())
        match = _THREAT_METADATA.match(path)
        if match and match.group(3) is None and self.command == "GET":
            return self.app.threat_metadata(match.group(1), match.group(2))
        if match and match.group(3) is not None and self.command == "PUT":
            key = urllib.parse.unquote(match.group(3))
            return self.app.set_threat_metadata(match.group(1), match.group(2), key, self._body())
        return 404, {"error": f"no route {self.command} {path}"}

    def _handle(self) -> None:
        try:
            status, body = self._dispatch()
        except RequestError as error:
            status, body = error.status, {"error": str(error)}
        except Exception as error:  # noqa: BLE001 - a server answers every request, a 500 with the reason
            status, body = 500, {"error": str(error).strip()}
        self._send(status, body)

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle


def serve(config: Path, state_dir: Path, token_file: Path, port: int, maintenance_file: Path | None = None) -> None:
    app = App(config, state_dir, token_file.read_text().strip(), maintenance_file)
    handler = type("BoundHandler", (Handler,), {"app": app})
    # The listen backlog of a real server (socketserver's default of 5 resets a burst of clients).
    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 128})
    httpd = server_class(("127.0.0.1", port), handler)
    # A graceful stop, as a real server's: SIGTERM stops the listening socket at once (new connections are
    # refused, never left in the backlog to be reset: a load balancer sends them to another host), ends the
    # accept loop, and server_close() waits for the requests under way to be answered (`stop` kills the
    # process after 10 s).
    httpd.daemon_threads = False
    httpd.block_on_close = True

    def graceful_stop(*_):
        with contextlib.suppress(OSError):
            httpd.socket.shutdown(socket.SHUT_RDWR)
        threading.Thread(target=httpd.shutdown).start()

    signal.signal(signal.SIGTERM, graceful_stop)
    print(f"tmi-standin pid {os.getpid()} serving 127.0.0.1:{port} with {config}", file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


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
                              "--state-dir", args.state_dir, "--token-file", args.token_file, "--port", str(args.port),
                              *(["--maintenance-file", args.maintenance_file] if args.maintenance_file else [])],
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
    parser.add_argument("--maintenance-file", default=None,
                        help="the maintenance flag, shared by the stand-ins of one deployment "
                             "(default: maintenance in the state directory)")
    parser.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    missing = [name for name in ("config", "state_dir", "token_file", "port") if not getattr(args, name)]
    if missing:
        options = ", --".join(m.replace("_", "-") for m in missing)
        sys.exit(f"tmi-standin: give --{options} (or the TMI_APP_* environment)")
    if args.action == "serve":
        serve(Path(args.config), Path(args.state_dir), Path(args.token_file), args.port,
              Path(args.maintenance_file) if args.maintenance_file else None)
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
        self.maintenance_file: Path | None = None  # another stand-in's flag, to serve one deployment with it
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
                "--state-dir", str(self.state_dir), "--token-file", str(self.token_file), "--port", str(self.port),
                *(["--maintenance-file", str(self.maintenance_file)] if self.maintenance_file else [])]

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

    def request(self, method: str, path: str, token: str | None = "", body: object = None,
                timeout: float = 10) -> tuple[int, object]:
        import urllib.error
        import urllib.request

        headers = {} if token is None else {"Authorization": f"Bearer {token or self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
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
