"""Benchmark: what users see at the application while migrate.yml takes the database from 15 to 17.

    .venv/bin/python benchmarks/application.py [--scale 100000] [--rate 20] [--pgbench-rate 50]
        [--pgbench-clients 4] [--timeout 60] [--app-hosts 2] [--ways runbook,collection] [--out DIR]

    .venv/bin/python benchmarks/application.py --scale 100000   # one million threats (4.42M rows): issue 17's figure
    .venv/bin/python benchmarks/application.py --scale 23000    # about one million rows (230,000 threats)
    .venv/bin/python benchmarks/application.py --scale 2000     # make demo's scale: a few minutes

--scale is the number of threat models (10 threats each). One TMI database is generated at
version 15 and, for each way in turn, copied (CREATE DATABASE ... TEMPLATE), Redis reset to its
defaults and the TMI stand-in started on its pre-migration config, as orchestration.py does; then
the whole migrate.yml runs 15 -> 17 while, from WARMUP seconds before it starts to SETTLE seconds
after it ends:

* the application is --app-hosts stand-ins (default 2) on their own ports, one deployment: one
  config file, one maintenance switch, each an inventory host of group tmi_app with its own URL
  and service commands, so migrate.yml restarts them one at a time. The clients reach them as
  through a load balancer: request n goes to host n mod N, and a refused connection (a host
  restarting) is tried on the next host, as nginx's ``proxy_next_upstream error`` does; a
  request that got no answer is not retried. With --app-hosts 1 every restart is a gap users see;
* HTTP clients call the application at --rate requests/s per endpoint, on a fixed schedule (a
  request that cannot start on time still counts from its scheduled start, so a stall is counted
  in full): GET a threat model's threats, POST a threat, PUT a threat's metadata key. Each
  request's outcome: a successful answer (2xx), 503 because of maintenance mode, another 5xx (the
  stand-in answers 503 when a statement waited out its 30 s statement timeout or the database is
  unreachable), a refused connection (the application restarting), a reset one, or no answer
  within --timeout;
* pgbench runs benchlib's TMI-shaped transactions (those of online_migration.py) at
  --pgbench-rate on the database itself, logging every transaction. pgbench stands for writers
  that maintenance mode does not stop, so its writes to threats and metadata are declared to the
  validation (tmi_allow_changes: writes, not deletes), in both ways alike.

The ways (WAYS): ``runbook`` forces today's behaviour (maintenance mode for the whole migration,
files as written, plain CREATE INDEX); ``collection`` runs migrate.yml with its defaults. Figures
per way, for the whole run and for each phase of the run record (runs/<id>/run.json): the longest
stretch without a successful answer (per endpoint and for all of them together), requests,
failures by kind, p99 and longest latency of the successful ones, and pgbench's longest and p99
latency and failed transactions. Target (issue 17): for the collection, no stretch of 1 s or more
without a successful answer and no failed write during the whole run. Results: a table,
application-<scale>.json and application-<scale>.png (the timeline of every request, phases
shaded, one panel per way).
"""

from __future__ import annotations

import bisect
import http.client
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from benchlib import (
    PGBENCH_IDS_SQL,
    PGBENCH_WRITES,
    Bench,
    Pgbench,
    exit_status,
    parser,
    percentile,  # api_probe's nearest rank
    pgbench_figures,
    table,
)

from tmi_testenv import standin

# Extra variables per way. Variables a clone does not know yet are ignored by ansible-playbook.
WAYS = {
    "runbook": ["-e", "tmi_maintenance=always", "-e", "tmi_online_rewrites=false",
                "-e", "migrate_online_index_builds=false", "-e", "migrate_lock_queue_timeout=0"],
    "collection": [],
}
ENDPOINTS = ("read threats", "create threat", "set metadata")
WRITES = ("create threat", "set metadata")
WARMUP, SETTLE = 3.0, 3.0
MAX_IN_FLIGHT = 64  # requests per endpoint under way at once; more wait for a thread (still timed from schedule)
TARGET_STALL_S = 1.0
STATEMENT_TIMEOUT_S = 30  # the stand-in's default (tests/tmi_testenv/standin.py), for the record


@dataclass(frozen=True)
class Request:
    endpoint: str
    scheduled: float  # epoch seconds
    ended: float
    outcome: str  # ok, maintenance, error (other 5xx), http_4xx, refused, reset, timeout
    status: int = 0

    @property
    def latency(self) -> float:
        return self.ended - self.scheduled


class HttpLoad:
    """Clients calling the application hosts (``apps``) at a fixed rate per endpoint, each request on its own
    connection, spread over the hosts as a load balancer would."""

    def __init__(self, apps: list, ids: list[tuple[str, str]], rate: float, timeout: float):
        self.apps, self.ids, self.rate, self.timeout = apps, ids, rate, timeout
        self.requests: list[Request] = []
        self._stop = threading.Event()
        self._pools = {name: ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix=name) for name in ENDPOINTS}
        self._schedulers: list[threading.Thread] = []
        self.started = self.stopped = 0.0

    def start(self) -> HttpLoad:
        self.started = time.time()
        for offset, name in enumerate(ENDPOINTS):
            # Endpoints interleaved within each period, so that together they sample evenly.
            first = self.started + offset / (self.rate * len(ENDPOINTS))
            thread = threading.Thread(target=self._schedule, args=(name, first), daemon=True)
            thread.start()
            self._schedulers.append(thread)
        return self

    def stop(self) -> list[Request]:
        self._stop.set()
        for thread in self._schedulers:
            thread.join()
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self.stopped = time.time()
        return sorted(self.requests, key=lambda r: r.scheduled)

    def _schedule(self, name: str, first: float) -> None:
        n = 0
        while not self._stop.is_set():
            scheduled = first + n / self.rate
            delay = scheduled - time.time()
            if delay > 0 and self._stop.wait(delay):
                return
            self._pools[name].submit(self._call, name, n, scheduled)
            n += 1

    def _request(self, name: str, n: int) -> tuple[str, str, dict | None]:
        tm_id, threat_id = self.ids[n % len(self.ids)]
        if name == "read threats":
            return "GET", f"/threat_models/{tm_id}/threats", None
        if name == "create threat":
            return "POST", f"/threat_models/{tm_id}/threats", {"name": f"bench http threat {n}", "severity": "Low"}
        return "PUT", f"/threat_models/{tm_id}/threats/{threat_id}/metadata/bench-http-{n % 50}", {"value": str(n)}

    def _call(self, name: str, n: int, scheduled: float) -> None:
        method, path, body = self._request(name, n)
        status, outcome = 0, "refused"
        # The load balancer: host n mod N first, the next ones only when a host refuses the connection (nothing
        # reached it, so any request may go elsewhere).
        for turn in range(len(self.apps)):
            app = self.apps[(n + turn) % len(self.apps)]
            status, outcome = self._send(app, method, path, body)
            if outcome != "refused":
                break
        self.requests.append(Request(name, scheduled, time.time(), outcome, status))

    def _send(self, app, method: str, path: str, body: dict | None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=self.timeout)
        try:
            headers = {"Authorization": f"Bearer {app.token}", "Content-Type": "application/json"}
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = conn.getresponse()
            status, data = response.status, response.read()
            return status, classify(status, data)
        except ConnectionRefusedError:
            return 0, "refused"
        except TimeoutError:
            return 0, "timeout"
        except (ConnectionError, http.client.HTTPException, OSError):
            return 0, "reset"  # the application went away while answering (a restart)
        finally:
            conn.close()


def classify(status: int, body: bytes) -> str:
    if 200 <= status < 300:
        return "ok"
    if status == 503 and b"maintenance mode" in body:
        return "maintenance"
    return "error" if status >= 500 else f"http_{status}"


def longest_without_success(successes: list[float], start: float, end: float) -> float:
    """The longest part of [start, end] between two successful answers (successes: their sorted end times,
    with the clients' start and stop as sentinels)."""
    longest = 0.0
    first = max(bisect.bisect_left(successes, start) - 1, 0)
    last = min(bisect.bisect_right(successes, end), len(successes) - 1)
    for a, b in zip(successes[first:last], successes[first + 1:last + 1], strict=True):
        longest = max(longest, min(b, end) - max(a, start))
    return longest


def http_figures(requests: list[Request], successes: list[float], start: float, end: float) -> dict:
    """Figures of the requests scheduled in [start, end)."""
    inside = [r for r in requests if start <= r.scheduled < end]
    latencies = [r.latency for r in inside if r.outcome == "ok"]
    count = {kind: sum(1 for r in inside if r.outcome == kind)
             for kind in ("ok", "maintenance", "error", "refused", "reset", "timeout")}
    return {"requests": len(inside), "ok": count["ok"],
            "failed_5xx": count["maintenance"] + count["error"], "maintenance_503": count["maintenance"],
            "refused": count["refused"], "reset": count["reset"], "timeouts": count["timeout"],
            "other": len(inside) - sum(count.values()),
            "longest_without_success_s": round(longest_without_success(successes, start, end), 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
            "max_ms": round(max(latencies) * 1000, 1) if latencies else None}


def window_figures(run: dict, start: float, end: float) -> dict:
    requests = run["requests"]
    http = {}
    for name in ("all", *ENDPOINTS):
        chosen = requests if name == "all" else [r for r in requests if r.endpoint == name]
        successes = [run["clients_started"], *sorted(r.ended for r in chosen if r.outcome == "ok"),
                     run["clients_stopped"]]
        http[name] = http_figures(chosen, successes, start, end)
    writes = [r for r in requests if r.endpoint in WRITES and start <= r.scheduled < end]
    http["failed_writes"] = sum(1 for r in writes if r.outcome != "ok")
    return {"seconds": round(end - start, 2), "http": http,
            "pgbench": pgbench_figures(run["transactions"], start, end)}


def app_hosts(bench: Bench, count: int) -> list:
    """The application: bench.app (started afresh on the pre-migration config) and count - 1 more stand-ins on
    its config file, token and maintenance flag, each (re)started; app1..appN in that order."""
    bench.start_app("tmi")
    hosts = [bench.app]
    for number in range(2, count + 1):
        other = standin.StandIn(bench.work / f"app{number}")
        other.config, other.maintenance_file = bench.app.config, bench.app.state_dir / "maintenance"
        other.token_file.write_text(bench.app.token)
        other.token = bench.app.token
        other.stop()  # left running by the previous way: start it on the config just written
        hosts.append(other.start())
    return hosts


def app_inventory(bench: Bench, hosts: list) -> list[str]:
    """ansible-playbook arguments adding the hosts to group tmi_app, each with its URL and service commands."""
    inventory = {f"app{number}": {"tmi_app_url": app.url,
                                  "tmi_app_service_commands": {action: f"{app.env()['TMI_APP_CTL']} {action}"
                                                               for action in ("start", "stop", "restart")}}
                 for number, app in enumerate(hosts, start=1)}
    path = bench.work / "app_hosts.yml"
    path.write_text(json.dumps({"tmi_app": {"hosts": inventory}}))  # JSON is YAML
    return ["-i", str(path), "-e", json.dumps({"app_config_hosts": list(inventory)})]


def run_way(bench: Bench, args, way: str, ids: list[tuple[str, str]]) -> dict:
    """migrate.yml 15 -> 17 on a fresh copy with the application running, under both loads."""
    bench.clone("tmi_source", "tmi")
    bench.reset_redis()
    hosts = app_hosts(bench, args.app_hosts)
    bench.app.request("POST", "/admin/maintenance/disable")  # a run that failed earlier may have left it on
    extra = [*WAYS[way], *app_inventory(bench, hosts), "-e", f"tmi_run_id=application-{way}",
             "-e", json.dumps({"tmi_allow_changes": PGBENCH_WRITES})]
    pgbench = Pgbench(bench, "tmi", bench.work / f"pgbench-{way}", args.pgbench_rate, args.pgbench_clients).start()
    clients = HttpLoad(hosts, ids, args.rate, args.timeout).start()
    try:
        time.sleep(WARMUP)
        started = time.time()
        seconds = bench.playbook("playbooks/migrate.yml", "tmi", *extra)
        ended = started + seconds
        time.sleep(SETTLE)
    finally:
        requests = clients.stop()
        done = pgbench.stop()
        for other in hosts[1:]:
            other.stop()
    record = bench.last_run_record()
    if record.get("failed") or record.get("migration", {}).get("version_after") != 17:
        raise SystemExit(f"{way}: migrate.yml did not bring the database to 17: {record.get('error')}")
    phases = [{"phase": p["phase"], "start": p["started"], "end": p["started"] + p["duration"]}
              for p in record.get("phases", [])]
    return {"extra": WAYS[way], "start": started, "end": ended, "phases": phases, "requests": requests,
            "clients_started": clients.started, "clients_stopped": clients.stopped,
            "maintenance": record.get("maintenance"), **done}


def summarise(run: dict) -> dict:
    windows = {"whole run": window_figures(run, run["start"], run["end"])}
    for phase in run["phases"]:
        windows[phase["phase"]] = window_figures(run, phase["start"], phase["end"])
    return {"extra_vars": run["extra"], "migrate_seconds": round(run["end"] - run["start"], 2),
            "maintenance": run["maintenance"],
            "phases": [{"phase": p["phase"], "start_s": round(p["start"] - run["start"], 2),
                        "seconds": round(p["end"] - p["start"], 2)} for p in run["phases"]],
            "windows": windows, "pgbench_aborted_clients": run["aborted_clients"]}


def main() -> int:
    p = parser(__doc__, scale=100000)
    p.add_argument("--rate", type=float, default=20, help="HTTP requests per second per endpoint (default 20)")
    p.add_argument("--pgbench-rate", type=int, default=50, help="pgbench transactions per second (default 50)")
    p.add_argument("--pgbench-clients", type=int, default=4, help="pgbench clients (default 4)")
    p.add_argument("--timeout", type=float, default=60,
                   help=f"seconds an HTTP client waits for an answer (default 60; the stand-in gives up on a "
                        f"statement after {STATEMENT_TIMEOUT_S})")
    p.add_argument("--app-hosts", type=int, default=2,
                   help="application hosts, restarted one at a time, reached through a load balancer (default 2)")
    p.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of {', '.join(WAYS)} (default all)")
    args = p.parse_args()
    if args.app_hosts < 1:
        p.error("--app-hosts: give at least 1")
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    if unknown := sorted(set(ways) - set(WAYS)):
        p.error(f"--ways: unknown {', '.join(unknown)}; choose among {', '.join(WAYS)}")
    with Bench("application", args) as bench:
        rows = bench.database("tmi_source", 15)
        bench.sql(PGBENCH_IDS_SQL, "tmi_source")
        threats = bench.sql("SELECT count(*) FROM threats", "tmi_source")[0][0]
        sample = bench.sql("SELECT tm_id, threat_id FROM bench_ids ORDER BY n LIMIT 1000", "tmi_source")
        ids = [(str(tm), str(t)) for tm, t in sample]
        runs = {way: run_way(bench, args, way, ids) for way in ways}
        result = {"threats": threats, "app_hosts": args.app_hosts, "rate_per_endpoint": args.rate,
                  "endpoints": list(ENDPOINTS),
                  "client_timeout_s": args.timeout, "app_statement_timeout_s": STATEMENT_TIMEOUT_S,
                  "pgbench": {"rate": args.pgbench_rate, "clients": args.pgbench_clients},
                  "ways": {way: summarise(run) for way, run in runs.items()}}
        judged = "collection" if "collection" in result["ways"] else ways[-1]
        whole = result["ways"][judged]["windows"]["whole run"]["http"]
        met = whole["all"]["longest_without_success_s"] < TARGET_STALL_S and whole["failed_writes"] == 0
        result["target"] = {"way": judged, "longest_without_success_s": TARGET_STALL_S, "failed_writes": 0, "met": met}

        def plot(plt):
            return timeline(plt, runs, threats)

        json_path, png_path = bench.save(result, plot)
    print(f"{rows:,} rows, {threats:,} threats; {args.app_hosts} application host(s); "
          f"HTTP {args.rate:g} req/s per endpoint "
          f"({', '.join(ENDPOINTS)}); pgbench {args.pgbench_clients} clients at {args.pgbench_rate} tx/s")
    print(report(result))
    print(f"target ({judged}: no stretch of {TARGET_STALL_S:g} s without a successful answer, no failed write, "
          f"whole run): {'met' if met else 'missed'}")
    print(f"results: {json_path}, {png_path.name}")
    return exit_status(met)


def report(result: dict) -> str:
    """Per way and window, all endpoints together; then the whole run per endpoint."""
    lines = []
    for way, data in result["ways"].items():
        for window, f in data["windows"].items():
            h, pg = f["http"]["all"], f["pgbench"]
            lines.append([way, window, f["seconds"], h["requests"], h["ok"],
                          f"{h['failed_5xx']} ({h['maintenance_503']})", h["refused"] + h["reset"], h["timeouts"],
                          h["longest_without_success_s"], fmt(h["p99_ms"]), fmt(h["max_ms"]), pg["max_ms"],
                          pg["p99_ms"], pg["failed"]])
    overall = table(["way", "window", "seconds", "requests", "ok", "5xx (maint.)", "refused/reset", "timeouts",
                     "no success (s)", "p99 ms", "max ms", "pgbench max ms", "pgbench p99", "pgbench failed"], lines)
    lines = []
    for way, data in result["ways"].items():
        whole = data["windows"]["whole run"]["http"]
        for name in ENDPOINTS:
            h = whole[name]
            lines.append([way, name, h["requests"], h["ok"], f"{h['failed_5xx']} ({h['maintenance_503']})",
                          h["refused"] + h["reset"], h["timeouts"], h["longest_without_success_s"], fmt(h["p99_ms"]),
                          fmt(h["max_ms"])])
    per_endpoint = table(["way", "endpoint (whole run)", "requests", "ok", "5xx (maint.)", "refused/reset",
                          "timeouts", "no success (s)", "p99 ms", "max ms"], lines)
    return f"{overall}\n\n{per_endpoint}"


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


MARKERS = {"maintenance": ("x", "#dd8452", "503 maintenance"), "error": ("s", "#8172b3", "other 5xx"),
           "refused": ("v", "#c44e52", "refused"), "reset": ("v", "#c44e52", None),
           "timeout": ("^", "black", "timeout")}


def timeline(plt, runs: dict, threats: int):
    """One panel per way: every request's latency from its scheduled start (failures marked), pgbench's
    transactions in grey, the run record's phases shaded and named."""
    figure, axes = plt.subplots(len(runs), 1, figsize=(12, 3.6 * len(runs)), sharey=True, squeeze=False)
    colors = {"read threats": "#4c72b0", "create threat": "#55a868", "set metadata": "#937860"}
    for ax, (way, run) in zip(axes[:, 0], runs.items(), strict=True):
        origin = run["start"]
        done = [(s - origin, lat * 1000) for s, lat, failed in run["transactions"] if not failed]
        ax.scatter([x for x, _y in done], [y for _x, y in done], s=1, color="#bbbbbb", alpha=0.5, label="pgbench")
        for name in ENDPOINTS:
            ok = [r for r in run["requests"] if r.endpoint == name and r.outcome == "ok"]
            ax.scatter([r.scheduled - origin for r in ok], [r.latency * 1000 for r in ok], s=3,
                       color=colors[name], label=name)
        for outcome, (marker, color, label) in MARKERS.items():
            bad = [r for r in run["requests"] if r.outcome == outcome]
            if bad:
                ax.scatter([r.scheduled - origin for r in bad], [max(r.latency * 1000, 0.1) for r in bad], s=14,
                           marker=marker, color=color, label=label)
        for i, phase in enumerate(run["phases"]):
            ax.axvspan(phase["start"] - origin, phase["end"] - origin, color=("#f0f0f0", "#dfe9f5")[i % 2], zorder=0)
            ax.text((phase["start"] + phase["end"]) / 2 - origin, 1.0, phase["phase"], rotation=90, fontsize=6,
                    ha="center", va="top", transform=ax.get_xaxis_transform())
        ax.axhline(TARGET_STALL_S * 1000, color="grey", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{way}: requests during migrate.yml 15 -> 17 ({threats:,} threats)", fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, markerscale=2)
    axes[-1, 0].set_xlabel("seconds since migrate.yml started (scheduled start of each request)")
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    sys.exit(main())
