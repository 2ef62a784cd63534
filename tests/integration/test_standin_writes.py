"""The TMI stand-in's write endpoints and its database access, against the real servers.

The application benchmark (benchmarks/application.py) relies on them: writes that work at schema
15 and 17 alike, refused in maintenance, caches invalidated, requests that wait behind a lock
instead of failing at once, and connections that survive the database going away under them.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from conftest import tmi_install
from tmi_testenv.standin import POOL_SIZE, write_config


@pytest.fixture(params=[15, 17], ids=["schema15", "schema17"])
def app(request, pg_server, redis_server, tmi_db, tmp_path):
    with tmi_install(pg_server, redis_server, tmi_db, tmp_path, version=request.param, threat_models=4,
                     seed=5) as (standin, env):
        yield standin, env, tmi_db


def configure(standin, env, cache: bool = True, statement_timeout: str | None = None) -> None:
    """Rewrite the stand-in's config (cache on; a statement timeout) and restart it."""
    write_config(standin.config, env, env, cache_enabled=cache)
    if statement_timeout:
        config = yaml.safe_load(standin.config.read_text())
        config["database"]["statement_timeout"] = statement_timeout
        standin.config.write_text(yaml.safe_dump(config, sort_keys=False))
    done = standin.control("restart")
    assert done.returncode == 0, done.stdout + done.stderr


def a_threat(db) -> tuple[str, str]:
    return tuple(str(v) for v in db.query("SELECT threat_model_id, id FROM threats ORDER BY id LIMIT 1")[0])


def counts(db) -> tuple[int, int]:
    return db.scalar("SELECT count(*) FROM threats"), db.scalar("SELECT count(*) FROM metadata")


def test_create_a_threat_and_set_a_metadata_key_invalidate_the_cache(app):
    standin, env, db = app
    configure(standin, env, cache=True)
    tm_id, threat_id = a_threat(db)
    status, before = standin.request("GET", f"/threat_models/{tm_id}/threats")
    assert status == 200 and standin.request("GET", f"/threat_models/{tm_id}/threats")[1] == before  # cached

    status, created = standin.request("POST", f"/threat_models/{tm_id}/threats",
                                      body={"name": "Tampering with the token", "severity": "High"})
    assert status == 201
    assert db.query("SELECT threat_model_id::text, name, severity FROM threats WHERE id = %s", (created["id"],)) == [
        (tm_id, "Tampering with the token", "High")]
    status, after = standin.request("GET", f"/threat_models/{tm_id}/threats")
    assert status == 200 and created["id"] in {t["id"] for t in after} and len(after) == len(before) + 1

    metadata = f"/threat_models/{tm_id}/threats/{threat_id}/metadata"
    assert standin.request("GET", metadata)[0] == 200  # now cached
    assert standin.request("PUT", f"{metadata}/owner-team", body={"value": "blue"}) == (
        201, {"key": "owner-team", "value": "blue", "created": True})
    assert {"key": "owner-team", "value": "blue"} in standin.request("GET", metadata)[1]
    assert standin.request("PUT", f"{metadata}/owner-team", body={"value": "red"})[0] == 200
    assert {"key": "owner-team", "value": "red"} in standin.request("GET", metadata)[1]
    assert db.query("SELECT value FROM metadata WHERE entity_type = 'threat' AND entity_id = %s AND key = %s",
                    (threat_id, "owner-team")) == [("red",)]


def test_concurrent_upserts_of_one_key_insert_it_once(app):
    standin, _env, db = app
    tm_id, threat_id = a_threat(db)
    path = f"/threat_models/{tm_id}/threats/{threat_id}/metadata/race"
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda n: standin.request("PUT", path, body={"value": f"v{n}"})[0], range(32)))
    assert sorted(statuses) == [200] * 31 + [201]
    assert db.scalar("SELECT count(*) FROM metadata WHERE entity_id = %s AND key = 'race'", (threat_id,)) == 1


def test_writes_are_refused_in_maintenance_without_token_and_on_bad_input(app):
    standin, _env, db = app
    tm_id, threat_id = a_threat(db)
    threats, metadata = f"/threat_models/{tm_id}/threats", f"/threat_models/{tm_id}/threats/{threat_id}/metadata"
    before = counts(db)
    refusals = [
        (("POST", threats, None, {"name": "x"}), 401, "bearer token"),
        (("PUT", f"{metadata}/k", None, {"value": "v"}), 401, "bearer token"),
        (("POST", threats, "", {"name": "x", "severity": "Severe"}), 400, "severity: one of"),
        (("POST", threats, "", {"severity": "Low"}), 400, "name:"),
        (("POST", "/threat_models/00000000-0000-0000-0000-000000000000/threats", "", {"name": "x"}), 404, "not found"),
        (("PUT", f"{metadata}/bad%20key", "", {"value": "v"}), 400, "key:"),
        (("PUT", f"{metadata}/{'k' * 129}", "", {"value": "v"}), 400, "key:"),
        (("PUT", f"{metadata}/k", "", {"value": "v" * 65536}), 400, "value:"),
        (("PUT", f"{metadata}/k", "", {}), 400, "value:"),
        (("PUT", f"/threat_models/{tm_id}/threats/00000000-0000-0000-0000-000000000000/metadata/k", "",
          {"value": "v"}), 404, "not found"),
    ]
    for (method, path, token, body), status, reason in refusals:
        answer = standin.request(method, path, token=token, body=body)
        assert answer[0] == status and reason in answer[1]["error"], (method, path, answer)
    assert standin.request("POST", "/admin/maintenance/enable")[0] == 200
    assert standin.request("POST", threats, body={"name": "x"}) == (503, {"error": "maintenance mode"})
    assert standin.request("PUT", f"{metadata}/k", body={"value": "v"}) == (503, {"error": "maintenance mode"})
    assert counts(db) == before


def hold_lock(db_server, dbname: str, statement: str, seconds: float) -> threading.Thread:
    """Another session takes a lock and keeps it for `seconds`; returns once the lock is held."""
    held = threading.Event()

    def hold():
        conn = db_server.connect(dbname)
        conn.autocommit = False
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                held.set()
                time.sleep(seconds)
            conn.commit()
        finally:
            conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    return thread


def test_a_request_behind_a_lock_waits_then_gives_up_at_the_statement_timeout(app):
    standin, env, db = app
    configure(standin, env, cache=False, statement_timeout="3s")
    tm_id, threat_id = a_threat(db)
    path = f"/threat_models/{tm_id}/threats/{threat_id}/metadata/locked"

    holder = hold_lock(db.server, db.name, "LOCK TABLE metadata IN ACCESS EXCLUSIVE MODE", 1.5)
    started = time.monotonic()
    assert standin.request("PUT", path, body={"value": "waited"})[0] == 201
    assert time.monotonic() - started >= 1.0, "the request waited for the lock"
    holder.join()

    before = counts(db)
    holder = hold_lock(db.server, db.name, "LOCK TABLE metadata IN ACCESS EXCLUSIVE MODE", 5)
    started = time.monotonic()
    status, body = standin.request("PUT", path, body={"value": "gave up"})
    waited = time.monotonic() - started
    holder.join()
    assert status == 503 and "statement timeout" in body["error"] and "3 s" in body["error"], body
    assert 2.5 <= waited < 5
    assert counts(db) == before
    assert db.scalar("SELECT value FROM metadata WHERE entity_id = %s AND key = 'locked'", (threat_id,)) == "waited"


def test_requests_share_a_bounded_pool_and_survive_terminated_connections(app):
    standin, _env, db = app
    tm_id, threat_id = a_threat(db)
    list_path = f"/threat_models/{tm_id}/threats"
    # Slow every statement a little, so that the requests overlap.
    holder = hold_lock(db.server, db.name, "LOCK TABLE threats IN SHARE ROW EXCLUSIVE MODE", 0.5)
    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(lambda n: standin.request("POST", list_path, body={"name": f"t{n}"})[0], range(48)))
    holder.join()
    assert answers == [201] * 48
    standin_backends = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tmi-standin'"
    assert 1 < db.scalar(standin_backends) <= POOL_SIZE

    terminated = db.scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE application_name = 'tmi-standin'")
    assert terminated > 1
    assert standin.request("GET", list_path)[0] == 200
    assert standin.request("PUT", f"/threat_models/{tm_id}/threats/{threat_id}/metadata/after",
                           body={"value": "v"})[0] == 201
