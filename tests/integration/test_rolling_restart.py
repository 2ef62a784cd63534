"""Rolling restarts of the app_config role, against real stand-ins on real PostgreSQL and Redis.

Several application hosts are stand-ins on their own loopback ports, each an inventory host with its own
URL (tmi_app_url) and service commands (tmi_app_service_commands), all reading the one config file the
role renders. A prober thread of the test, independent of the role, polls every host's /health every
50 ms while the role runs: at least one host answers at every moment, the hosts go down one after the
other, and the role's own figures (api_watch) agree with what the prober saw. A host that does not come
back stops the restart there; a single host's gap is measured and reported by migrate.yml.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tmi_install
from tmi_testenv.standin import StandIn

PLAYBOOK = str(REPO / "tests" / "integration" / "playbooks" / "app_config_role.yml")
POLL = 0.05
# How far api_watch's figures may be from the prober's. Each sees a gap to within one of its polls, but a request
# to a stand-in that is stopping may hang until its time-out (the prober's is 1 s) and delay the next poll, and on
# a busy machine a poll of /health and /ready (a new database connection each) takes a few hundred milliseconds.
MARGIN = 1.0


def health(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return -1


class Prober(threading.Thread):
    """Polls each host's /health every 50 ms; ``rounds`` holds (time, {host: status}) per round."""

    def __init__(self, urls: dict[str, str]):
        super().__init__(daemon=True)
        self.urls = urls
        self.rounds: list[tuple[float, dict[str, int]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            moment = time.monotonic()
            self.rounds.append((moment, {host: health(url) for host, url in self.urls.items()}))
            self.done.wait(max(0.0, POLL - (time.monotonic() - moment)))

    def __enter__(self) -> Prober:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(5)

    def down(self, host: str) -> list[tuple[float, float]]:
        """The stretches during which ``host`` did not answer 200: (first failed round, first answered round)."""
        stretches, began = [], None
        for moment, statuses in self.rounds:
            if statuses[host] != 200 and began is None:
                began = moment
            elif statuses[host] == 200 and began is not None:
                stretches.append((began, moment))
                began = None
        if began is not None:
            stretches.append((began, self.rounds[-1][0]))
        return stretches

    def longest_gap(self) -> float:
        """The longest time no host answered: from the first round without a 200 to the next round with one."""
        longest, began = 0.0, None
        for moment, statuses in self.rounds:
            if 200 not in statuses.values():
                began = moment if began is None else began
            elif began is not None:
                longest, began = max(longest, moment - began), None
        return longest

    def rounds_without_an_answer(self) -> list[dict[str, int]]:
        return [statuses for _moment, statuses in self.rounds if 200 not in statuses.values()]


class Fleet:
    """Application hosts app1..appN: the installed stand-in and more on the same config file."""

    def __init__(self, first: StandIn, env: dict[str, str], tmp_path, count: int):
        self.env = env
        self.tmp_path = tmp_path
        self.standins = {"app1": first}
        for number in range(2, count + 1):
            other = StandIn(tmp_path / f"app{number}")
            other.config = first.config
            other.token_file.write_text(first.token)
            other.token = first.token
            self.standins[f"app{number}"] = other.start()
        self.commands = {host: self.ctl_commands(standin) for host, standin in self.standins.items()}
        self.with_urls = True

    @staticmethod
    def ctl_commands(standin: StandIn, **override: str) -> dict[str, str]:
        ctl = standin.env()["TMI_APP_CTL"]
        for option, value in override.items():
            ctl = ctl.replace(f"--{option} {shlex.quote(str(getattr(standin, option)))}", f"--{option} {value}")
        return {action: f"{ctl} {action}" for action in ("start", "stop", "restart")}

    @property
    def urls(self) -> dict[str, str]:
        return {host: standin.url for host, standin in self.standins.items()}

    def pids(self) -> dict[str, int | None]:
        return {host: standin.pid() for host, standin in self.standins.items()}

    def inventory(self) -> str:
        hosts = {host: {"tmi_app_service_commands": self.commands[host],
                        **({"tmi_app_url": standin.url} if self.with_urls else {})}
                 for host, standin in self.standins.items()}
        path = self.tmp_path / "app_hosts.yml"
        path.write_text(yaml.safe_dump({"all": {
            "children": {"tmi_app": {"hosts": hosts}},
            "vars": {"ansible_connection": "local", "ansible_pipelining": True,
                     "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}))
        return str(path)

    def run(self, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
        """The app_config role with app_config_hosts = every host of the fleet, under the prober's eye."""
        result_file = self.tmp_path / "app.json"
        result_file.unlink(missing_ok=True)
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(REPO / "inventories" / "local"),
                "-i", self.inventory(), PLAYBOOK, "-e", f"result_file={result_file}",
                "-e", json.dumps({"app_config_hosts": list(self.standins)}), *extra]
        result = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, text=True, check=False)
        record = json.loads(result_file.read_text()) if result_file.exists() else {}
        return result, record

    def stop(self) -> None:
        for host, standin in self.standins.items():
            if host != "app1":
                standin.stop()


@pytest.fixture
def fleet(request, pg_server, redis_server, tmi_db, tmp_path):
    count = getattr(request, "param", 2)
    with tmi_install(pg_server, redis_server, tmi_db, tmp_path, version=17, threat_models=4, seed=5) as (first, env):
        hosts = Fleet(first, env, tmp_path, count)
        try:
            yield hosts
        finally:
            hosts.stop()


def said(result: subprocess.CompletedProcess) -> str:
    return " ".join((result.stdout + result.stderr).split())


def assert_one_at_a_time(prober: Prober, hosts: list[str]) -> None:
    """Each host went down exactly once, after the previous one answered again; one answered at every round."""
    assert prober.rounds_without_an_answer() == []
    stretches = [prober.down(host) for host in hosts]
    assert all(len(stretch) == 1 for stretch in stretches), stretches
    for earlier, later in itertools.pairwise(stretches):
        assert earlier[0][1] <= later[0][0], f"a host went down before the previous one answered: {stretches}"


def test_hosts_restart_one_at_a_time_and_one_answers_at_every_moment(fleet):
    pids = fleet.pids()
    with Prober(fleet.urls) as prober:
        result, record = fleet.run()
    assert result.returncode == 0, result.stdout[-4000:]
    assert all(fleet.pids()[host] != pids[host] for host in pids), "every host runs a new process"
    assert_one_at_a_time(prober, ["app1", "app2"])

    restart = record["main"]["restart"]
    assert record["main"]["restarted"] is True and restart["one_at_a_time"] is True
    assert restart["restarted"] == ["app1", "app2"]
    assert [host["name"] for host in restart["hosts"]] == ["app1", "app2"]
    assert restart["gap_seconds"] == 0 and restart["gap"] is None
    for host in restart["hosts"]:
        seen = sum(to - began for began, to in prober.down(host["name"]))
        # The role's watcher and the test's prober see the same gap, each to within a poll; a request to a stopping
        # stand-in can hang until its time-out (the prober's is 1 s) and delay the next poll: a 1 s margin.
        assert 0 < host["seconds_unavailable"] < 15 and abs(host["seconds_unavailable"] - seen) < MARGIN, (host, seen)
        assert [stretch["open"] for stretch in host["down"]] == [False]
    assert re.search(r"Restart: 2 hosts one at a time, unavailable app1 [0-9.]+ s, app2 [0-9.]+ s; "
                     r"no host answered for 0\.0 s at the longest", said(result)), said(result)[-3000:]

    # The rollback's restart (entry point restore) goes one host at a time too.
    pids = fleet.pids()
    with Prober(fleet.urls) as prober:
        restored, after = fleet.run("-e", "entry=restore",
                                    "-e", json.dumps({"app_config_restore_previous": record["main"]["previous"]}))
    assert restored.returncode == 0, restored.stdout[-4000:]
    assert all(fleet.pids()[host] != pids[host] for host in pids)
    assert_one_at_a_time(prober, ["app1", "app2"])
    assert after["restore"]["restart"]["restarted"] == ["app1", "app2"]
    assert after["restore"]["restart"]["gap_seconds"] == 0


@pytest.mark.parametrize("fleet", [3], indirect=True)
@pytest.mark.parametrize("broken, cause", [
    ("unhealthy", "password authentication failed"),
    ("start fails", "exited with 1 on start"),
])
def test_a_host_that_does_not_come_back_stops_the_restart_and_the_first_keeps_serving(fleet, broken, cause):
    second = fleet.standins["app2"]
    if broken == "unhealthy":
        # app2 restarts on a config whose database password is wrong: it listens, /health answers 503.
        config = yaml.safe_load(second.config.read_text())
        config["database"]["password"] = "not-the-password"
        wrong = fleet.tmp_path / "wrong.yaml"
        wrong.write_text(yaml.safe_dump(config))
        fleet.commands["app2"] = Fleet.ctl_commands(second, config=shlex.quote(str(wrong)))
    else:
        # app2 restarts on a config file that does not exist: it stops, and its start command fails.
        fleet.commands["app2"] = Fleet.ctl_commands(second, config=str(fleet.tmp_path / "missing.yaml"))
    pids = fleet.pids()
    with Prober(fleet.urls) as prober:
        result, record = fleet.run("-e", "app_config_health_retries=2", "-e", "app_config_health_delay=0")
    assert result.returncode != 0
    message = said(result)
    assert "The rolling restart stopped at app2 (host 2 of 3)" in message, message[-3000:]
    assert cause in message and "Not restarted: app3." in message
    assert "Restarted and healthy before it: app1 (they serve)." in message
    assert "not-the-password" not in message

    after = fleet.pids()
    assert after["app1"] != pids["app1"] and after["app3"] == pids["app3"], "app3 was left alone"
    assert health(fleet.urls["app1"]) == 200 and health(fleet.urls["app3"]) == 200
    assert prober.rounds_without_an_answer() == []
    assert prober.down("app1") and prober.down("app1")[0][1] <= prober.down("app2")[0][0]
    assert prober.down("app3") == []

    # The run record says that hosts were restarted, which ones, and what the watcher saw.
    main = record["main"]
    assert main["restarted"] is True and main["restart"]["restarted"] == ["app1", "app2"]
    watched = {host["name"]: host for host in main["restart"]["hosts"]}
    assert watched["app3"]["seconds_unavailable"] == 0 and watched["app1"]["seconds_unavailable"] > 0
    assert watched["app2"]["down"][-1]["open"] is True
    assert main["restart"]["gap_seconds"] == 0


def test_several_hosts_without_their_own_url_are_refused_before_anything_changes(fleet):
    fleet.with_urls = False
    before = (fleet.pids(), fleet.standins["app1"].config.read_bytes())
    result, _record = fleet.run("-e", json.dumps({"app_config_host_urls": {"app2": fleet.urls["app2"]}}))
    assert result.returncode != 0
    message = said(result)
    assert ("The application is restarted one host at a time, each waited for at its own URL, but app1 of "
            "app_config_hosts (app1, app2) has no http(s) URL: set app_config_host_urls") in message, message[-3000:]
    assert "Nothing was changed." in message
    assert (fleet.pids(), fleet.standins["app1"].config.read_bytes()) == before


def test_api_watch_measures_a_host_that_never_answers_and_stops_on_its_stop_file(fleet, tmp_path):
    from conftest import run_module, start_module
    from tmi_testenv.servers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    targets = [{"name": "live", "url": fleet.urls["app1"]}, {"name": "dead", "url": dead}]
    watched = run_module("api_watch", {"targets": targets, "paths": ["/health", "/ready"], "duration": 2,
                                       "interval": 0.05})
    assert not watched.get("failed") and watched["stopped_by"] == "duration" and watched["changed"] is False
    live, gone = watched["targets"]
    # The stand-in opens a database connection per request: a poll takes longer than 50 ms on a busy machine.
    assert live["polls"] >= 3 and live["seconds_unavailable"] == 0 and live["down"] == []
    assert gone["down"][0]["open"] is True and gone["down"][0]["answer"]["status"] == -1
    assert "Connection refused" in gone["down"][0]["answer"]["body"]
    assert 1.8 < gone["seconds_unavailable"] <= 2.1 and watched["gap_seconds"] == 0

    alone = run_module("api_watch", {"targets": targets[1:], "duration": 0.5})
    assert 0.4 < alone["gap_seconds"] <= 0.6 and alone["gap"]["from"] < alone["gap"]["to"]

    stop_dir = tmp_path / "watch"
    stop_dir.mkdir()
    job = start_module("api_watch", {"targets": targets[:1], "stop_file": str(stop_dir / "stop"), "duration": 60})
    time.sleep(0.5)
    (stop_dir / "stop").touch()
    stopped = job.result(timeout=10)
    assert stopped["stopped_by"] == "stop_file" and stopped["seconds"] < 5

    refused = run_module("api_watch", {"targets": [{"name": "x", "url": "localhost:8080"}], "paths": ["health"]})
    assert refused["failed"] and "bad: localhost:8080, health" in refused["msg"]


def test_hosts_restarted_together_leave_a_gap_the_prober_and_api_watch_both_see(fleet, tmp_path):
    """The negative control: what the checks above would say of the restart as it was (every host at once)."""
    from conftest import start_module

    stop_dir = tmp_path / "watch"
    stop_dir.mkdir()
    targets = [{"name": host, "url": url} for host, url in fleet.urls.items()]
    with Prober(fleet.urls) as prober:
        job = start_module("api_watch", {"targets": targets, "paths": ["/health", "/ready"],
                                         "stop_file": str(stop_dir / "stop"), "interval": 0.05})
        time.sleep(0.5)
        # Both stop at once, then both start: a service manager restarting every host in parallel.
        stops = [threading.Thread(target=standin.stop) for standin in fleet.standins.values()]
        for thread in stops:
            thread.start()
        for thread in stops:
            thread.join()
        for standin in fleet.standins.values():
            standin.start()
        time.sleep(0.5)
        (stop_dir / "stop").touch()
        watched = job.result(timeout=30)
    assert prober.rounds_without_an_answer(), "the prober must see the rounds where no host answered"
    with pytest.raises(AssertionError):
        assert_one_at_a_time(prober, ["app1", "app2"])
    assert watched["gap_seconds"] > 0 and watched["gap"]["from"] < watched["gap"]["to"]
    # Both see the same gap (see MARGIN).
    assert abs(watched["gap_seconds"] - prober.longest_gap()) < MARGIN, (watched["gap_seconds"], prober.longest_gap())
