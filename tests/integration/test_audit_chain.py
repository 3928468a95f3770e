"""Tamper-evident log: every stream is a hash chain; altering stored bytes directly in the database is detected."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from domain.ids import credential_id
from domain.note import Note
from domain.operation import Operation
from services.audit import verify_all, verify_stream
from services.infrastructure.chain import GENESIS, HASHES_TABLE, event_hash
from services.infrastructure.database import DatabaseURL
from services.infrastructure.migrations import migrate
from services.infrastructure.store import ZLH, store_env
from services.instances import request_instance
from services.users import create_user, hash_token
from tests.integration.test_cli import zlh

pytestmark = pytest.mark.real_services  # the hash chain lives in real SQLite and PostgreSQL tables


def execute(database_url: str, sql: str, params: tuple = ()) -> int:  # type: ignore[type-arg]
    """Run one statement straight on the database, as an intruder would; `?` placeholders. Returns rowcount."""
    url = DatabaseURL.parse(database_url)
    if url.dialect == "sqlite":
        with closing(sqlite3.connect(url.path)) as conn, conn:
            return conn.execute(sql, params).rowcount
    with psycopg.connect(url.conninfo(), autocommit=True) as conn:
        return conn.execute(sql.replace("?", "%s"), params).rowcount  # type: ignore[arg-type]


def events_table(database_url: str) -> str:
    return "stored_events" if database_url.startswith("sqlite") else "zlh_events"


def db_id(database_url: str, stream_id: UUID) -> str:
    return stream_id.hex if database_url.startswith("sqlite") else str(stream_id)


@pytest.fixture
def app(database_url: str) -> Iterator[ZLH]:
    url = DatabaseURL.parse(database_url)
    migrate(url)
    app = ZLH(env=store_env(url))
    yield app
    app.close()


def populate(app: ZLH) -> dict[str, UUID]:
    """A user (2 events, one save, with its credential), an operation at 4 versions, a note at 5."""
    user = create_user(app, f"{uuid4().hex[:8]}@example.com", admin=False).principal
    accepted = request_instance(app, user.id, "k1", "game", "alpha", "minecraft")
    op = app.repository.get(accepted.operation_id)
    op.claim("w1")
    app.save(op)
    op.start_step("allocate", {"port": 25565})
    op.finish_step("allocate", {"port": 25565})
    app.save(op)  # two events of one stream in one batch
    note = Note(user.id)
    for n in range(4):
        note.save(f"v{n}", expected=n)
        app.save(note)
    return {"user": user.id, "operation": op.id, "instance": accepted.instance_id, "note": note.id}


def test_a_fresh_log_verifies_and_the_chain_is_the_documented_layout(app: ZLH, database_url: str) -> None:
    streams = populate(app)
    for name, stream_id in streams.items():
        result = verify_stream(app, stream_id)
        assert result.ok and result.status == "intact", (name, result)
        assert result.first_broken_version is None
    assert verify_stream(app, streams["operation"]).checked == 4
    assert verify_stream(app, streams["note"]).checked == 5
    results = verify_all(app)
    assert results and all(r.ok for r in results)
    assert {streams[k] for k in streams} <= {r.stream_id for r in results}

    # Recompute the note's chain by hand from the raw stored rows, per the layout in services/chain.py.
    prev = GENESIS
    chain = app.recorder.select_chain(streams["note"])  # type: ignore[attr-defined]
    for version, stored in enumerate(app.recorder.select_events(streams["note"]), start=1):
        entry = chain[version - 1]
        assert entry.prev_hash == prev
        assert entry.hash == event_hash(prev, streams["note"], version, stored.topic, stored.state)
        prev = entry.hash
    assert verify_stream(app, streams["note"]).head == prev
    assert verify_stream(app, uuid4()).status == "missing"


# (what the intruder does, the version `verify` must name)
TAMPERINGS = {
    "state": ("UPDATE {events} SET state = ? WHERE originator_id = ? AND originator_version = 3", 3),
    "topic": ("UPDATE {events} SET topic = 'zlh.Note.Started' WHERE originator_id = ? AND originator_version = 3", 3),
    "delete-middle-event": ("DELETE FROM {events} WHERE originator_id = ? AND originator_version = 3", 3),
    "alter-hash-row": ("UPDATE {hashes} SET hash = ? WHERE originator_id = ? AND originator_version = 3", 3),
    "alter-prev-hash": ("UPDATE {hashes} SET prev_hash = ? WHERE originator_id = ? AND originator_version = 3", 3),
    "delete-hash-row": ("DELETE FROM {hashes} WHERE originator_id = ? AND originator_version = 3", 3),
    "delete-first-hash-row": ("DELETE FROM {hashes} WHERE originator_id = ? AND originator_version = 1", 1),
    "delete-event-and-hash-row": (
        "DELETE FROM {events} WHERE originator_id = ? AND originator_version = 3; "
        "DELETE FROM {hashes} WHERE originator_id = ? AND originator_version = 3", 3),
    "swap-states": (
        "UPDATE {events} SET state = (SELECT state FROM {events} e WHERE e.originator_id = {events}.originator_id "
        "AND e.originator_version = 5) WHERE originator_id = ? AND originator_version = 4", 4),
}


@pytest.mark.parametrize("kind", list(TAMPERINGS))
def test_any_direct_change_is_detected_at_its_version(app: ZLH, database_url: str, kind: str) -> None:
    streams = populate(app)
    note = streams["note"]
    sql, expected = TAMPERINGS[kind]
    sid = db_id(database_url, note)
    for statement in sql.format(events=events_table(database_url), hashes=HASHES_TABLE).split("; "):
        params: tuple = (sid,) * statement.count("originator_id = ?")  # type: ignore[type-arg]
        if kind == "state":
            stored = app.recorder.select_events(note, gt=2, lte=3)[0]
            assert b'"v1"' in stored.state
            params = (stored.state.replace(b'"v1"', b'"v9"'), *params)
        elif kind == "alter-hash-row":
            params = ("f" * 64, *params)
        elif kind == "alter-prev-hash":
            params = ("e" * 64, *params)
        assert execute(database_url, statement, params) == 1, statement

    result = verify_stream(app, note)
    assert not result.ok and result.status == "broken", result
    assert result.first_broken_version == expected, result
    assert f"version {expected}" in result.reason
    assert result.checked == expected - 1
    # The other streams are untouched, and verify_all singles out exactly this one.
    broken = [r for r in verify_all(app) if not r.ok]
    assert [(r.stream_id, r.first_broken_version) for r in broken] == [(note, expected)]


def test_the_hash_row_is_written_with_the_event_or_not_at_all(app: ZLH, database_url: str) -> None:
    """A conflicting append (two writers, one version) leaves neither an event nor a hash row behind."""
    streams = populate(app)
    a, b = app.repository.get(streams["note"]), app.repository.get(streams["note"])
    a.save("from a", expected=4)
    b.save("from b", expected=4)
    app.save(a)
    with pytest.raises(IntegrityError):
        app.save(b)
    result = verify_stream(app, streams["note"])
    assert result.ok and result.checked == 6
    assert app.repository.get(streams["note"]).content == "from a"


def test_a_deleted_event_stays_evident_after_its_version_is_written_again(app: ZLH, database_url: str) -> None:
    streams = populate(app)
    note = streams["note"]
    execute(database_url, f"DELETE FROM {events_table(database_url)} WHERE originator_id = ? "
            "AND originator_version = 5", (db_id(database_url, note),))
    assert verify_stream(app, note).first_broken_version == 5
    loaded = app.repository.get(note)
    assert loaded.version == 4
    loaded.save("rewritten", expected=3)
    app.save(loaded)  # the app writes version 5 again: the old hash row is kept, not replaced
    loaded.save("after", expected=4)
    app.save(loaded)
    result = verify_stream(app, note)
    assert result.status == "broken" and result.first_broken_version == 5, result


def test_known_limit_cutting_a_tail_with_its_hash_rows_goes_unnoticed(app: ZLH, database_url: str) -> None:
    """No secret and no external anchor: removing the newest events *and* their hash rows leaves a valid,
    shorter chain. Compare `head` with a copy kept elsewhere to catch that."""
    streams = populate(app)
    note = streams["note"]
    head = verify_stream(app, note).head
    for table in (events_table(database_url), HASHES_TABLE):
        execute(database_url, f"DELETE FROM {table} WHERE originator_id = ? AND originator_version = 5",
                (db_id(database_url, note),))
    result = verify_stream(app, note)
    assert result.ok and result.checked == 4 and result.head != head


def plain_recorder_app(url: DatabaseURL) -> ZLH:
    """The library's own recorder on the same database: no chaining code of ours on the insert path."""
    legacy = ZLH(env={k: v for k, v in store_env(url).items() if k != "APPLICATION_RECORDER_TOPIC"})
    assert type(legacy.recorder).__name__ in ("SQLiteApplicationRecorder", "PostgresApplicationRecorder")
    return legacy


def test_no_event_can_be_stored_without_its_hash_whatever_the_insert_path(database_url: str) -> None:
    """PostgreSQL chains any insert itself; SQLite refuses an event that arrives without its hash row."""
    url = DatabaseURL.parse(database_url)
    migrate(url)
    plain = plain_recorder_app(url)
    note = Note(uuid4())
    note.save("written by the library's plain insert path", expected=0)
    try:
        if url.dialect == "sqlite":
            with pytest.raises(IntegrityError, match="must be stored with its hash row"):
                plain.save(note)
            assert plain.find(note.id, Note) is None  # nothing stored
            return
        plain.save(note)
        execute(database_url, "INSERT INTO zlh_events (originator_id, originator_version, topic, state) "
                "VALUES (?, 3, 'zlh.Note.Saved', 'raw')", (str(note.id),))
    finally:
        plain.close()
    app = ZLH(env=store_env(url))
    try:
        result = verify_stream(app, note.id)
        assert result.ok and result.checked == 3  # every link written by the database, every one verifies
    finally:
        app.close()


def test_streams_stored_before_chaining_are_unchained_not_broken(database_url: str) -> None:
    url = DatabaseURL.parse(database_url)
    migrate(url)
    chain_ddl = "DROP TRIGGER zlh_chain ON zlh_events" if url.dialect == "postgres" else "DROP TRIGGER zlh_chain_guard"
    execute(database_url, chain_ddl)  # as before chaining existed
    legacy = plain_recorder_app(url)  # the library's plain recorder: what wrote every event before chaining
    try:
        note = Note(uuid4())
        note.save("old", expected=0)
        legacy.save(note)
    finally:
        legacy.close()
    reinstall_chain(url)
    app = ZLH(env=store_env(url))
    try:
        result = verify_stream(app, note.id)
        assert result.status == "unchained" and not result.ok and result.first_broken_version is None
        assert (result.unchained_from, result.unchained_to, result.checked) == (1, 2, 0)
        assert "unchained from version 1 to 2" in result.reason

        # Appending to it starts a chain at genesis: the old versions stay unchained, the new ones are verified.
        note = app.repository.get(note.id)
        note.save("new", expected=1)
        app.save(note)
        result = verify_stream(app, note.id)
        assert result.status == "unchained" and (result.unchained_to, result.checked) == (2, 1)
        assert app.recorder.select_chain(note.id)[2].prev_hash == GENESIS  # type: ignore[attr-defined]
        # ... and tampering with the chained part is still broken, not merely unchained.
        execute(database_url, f"UPDATE {events_table(database_url)} SET topic = 'x' WHERE originator_id = ? "
                "AND originator_version = 3", (db_id(database_url, note.id),))
        result = verify_stream(app, note.id)
        assert result.status == "broken" and result.first_broken_version == 3
    finally:
        app.close()


def test_cli_verifies_a_stream_and_the_whole_log(database_url: str, tmp_path: Path) -> None:
    assert zlh(database_url, tmp_path, "migrate").returncode == 0
    created = zlh(database_url, tmp_path, "users", "create", "ops@example.com", "--admin")
    assert created.returncode == 0, created.stderr
    user_id = json.loads(created.stdout)["id"]
    # The token's credential: its stream holds the token's hash (never the token).
    stream_id = str(credential_id(hash_token(json.loads(created.stdout)["token"])))

    ok = zlh(database_url, tmp_path, "audit", "stream", stream_id, "--verify")
    assert ok.returncode == 0, ok.stderr
    lines = [json.loads(line) for line in ok.stdout.splitlines()]
    assert [e["type"] for e in lines[:-1]] == ["zlh.Credential.Issued"]
    verdict = lines[-1]["verification"]
    assert verdict["status"] == "intact" and verdict["ok"] is True and verdict["checked"] == 1
    assert verdict["first_broken_version"] is None and len(verdict["head"]) == 64
    plain = zlh(database_url, tmp_path, "audit", "stream", stream_id)  # without --verify: as before
    assert plain.returncode == 0 and plain.stdout.splitlines() == ok.stdout.splitlines()[:-1]
    assert zlh(database_url, tmp_path, "audit", "stream", user_id, "--verify").returncode == 0

    clean = zlh(database_url, tmp_path, "audit", "verify", "--all")
    assert clean.returncode == 0, clean.stderr
    summary = json.loads(clean.stdout.splitlines()[-1])
    assert summary["streams"] >= 2 and summary["broken"] == 0 and summary["intact"] == summary["streams"]
    assert zlh(database_url, tmp_path, "audit", "verify").returncode == 2

    # An intruder rewrites the token hash of version 1 in place: same length, valid JSON, still decodes.
    uid = UUID(stream_id)
    stored = _raw_state(database_url, uid, 1)
    data = json.loads(stored)
    data["token_hash"] = "0" * len(data["token_hash"])
    assert execute(database_url, f"UPDATE {events_table(database_url)} SET state = ? WHERE originator_id = ? "
                   "AND originator_version = 1", (json.dumps(data).encode(), db_id(database_url, uid))) == 1

    bad = zlh(database_url, tmp_path, "audit", "stream", stream_id, "--verify")
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert "broken at version 1" in bad.stderr
    verdict = json.loads(bad.stdout.splitlines()[-1])["verification"]
    assert verdict["status"] == "broken" and verdict["first_broken_version"] == 1 and verdict["checked"] == 0

    tampered = zlh(database_url, tmp_path, "audit", "verify", "--all")
    assert tampered.returncode == 1, (tampered.stdout, tampered.stderr)
    out = [json.loads(line) for line in tampered.stdout.splitlines()]
    assert [(r["stream_id"], r["first_broken_version"]) for r in out[:-1]] == [(stream_id, 1)]
    assert out[-1]["broken"] == 1 and out[-1]["intact"] == out[-1]["streams"] - 1
    assert "1 of" in tampered.stderr and "broken" in tampered.stderr

    # Bytes that no longer decode at all are still listed (with the error) and still named.
    execute(database_url, f"UPDATE {events_table(database_url)} SET state = ? WHERE originator_id = ? "
            "AND originator_version = 1", (b"\x00garbage", db_id(database_url, uid)))
    garbage = zlh(database_url, tmp_path, "audit", "stream", stream_id, "--verify")
    assert garbage.returncode == 1 and "broken at version 1" in garbage.stderr
    assert "undecodable" in json.loads(garbage.stdout.splitlines()[0])["error"]


def reinstall_chain(url: DatabaseURL) -> None:
    """What migration step 4 does on a database made before chaining: the table (kept) and the trigger."""
    from services.infrastructure.chain import postgres_chain_ddl, sqlite_chain_ddl
    from services.infrastructure.database import ReadModelDB

    db = ReadModelDB(url, pool_size=1)
    try:
        with db.transaction() as cur:
            for statement in (postgres_chain_ddl("public", "zlh_events") if url.dialect == "postgres"
                              else sqlite_chain_ddl()):
                cur.execute(statement)  # type: ignore[arg-type]
    finally:
        db.close()


def _raw_state(database_url: str, stream_id: UUID, version: int) -> bytes:
    url = DatabaseURL.parse(database_url)
    sql = f"SELECT state FROM {events_table(database_url)} WHERE originator_id = ? AND originator_version = ?"
    if url.dialect == "sqlite":
        with closing(sqlite3.connect(url.path)) as conn:
            return conn.execute(sql, (stream_id.hex, version)).fetchone()[0]
    with psycopg.connect(url.conninfo()) as conn:
        return bytes(conn.execute(sql.replace("?", "%s"), (stream_id, version)).fetchone()[0])  # type: ignore[index]


@pytest.mark.postgres
def test_concurrent_appenders_keep_every_chain_intact(pg_url: str) -> None:
    """8 threads append to their own streams, 2 race on one stream (conflicts expected): every chain verifies."""
    url = DatabaseURL.parse(pg_url)
    migrate(url)
    app = ZLH(env=store_env(url, pool_size=12))
    try:
        shared = Note(uuid4())
        app.save(shared)
        own_ids: list[UUID] = []
        conflicts: list[int] = []
        wins: list[int] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def own_stream() -> None:
            try:
                op = Operation(request_key=str(uuid4()), kind="create", instance_id=uuid4(), owner_id=uuid4(),
                               fingerprint="f", params={})
                app.save(op)
                note = Note(op.owner_id)
                for n in range(25):
                    note.save(f"n{n}", expected=n)
                    app.save(note)
                with lock:
                    own_ids.extend([op.id, note.id])
            except BaseException as exc:
                errors.append(exc)

        def racer() -> None:
            try:
                for _ in range(25):
                    while True:
                        note = app.repository.get(shared.id)
                        note.save(f"race {note.saves}", expected=note.saves)
                        try:
                            app.save(note)
                        except IntegrityError:
                            with lock:
                                conflicts.append(1)
                            continue
                        with lock:
                            wins.append(1)
                        break
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=own_stream) for _ in range(8)]
        threads += [threading.Thread(target=racer) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(wins) == 50
        results = {r.stream_id: r for r in verify_all(app)}
        assert all(r.ok for r in results.values()), [r for r in results.values() if not r.ok]
        assert results[shared.id].checked == 51  # Started + 50 saves, one chain, no fork
        assert all(results[i].checked in (1, 26) for i in own_ids)
        # Nothing orphaned: exactly one hash row per stored event.
        with psycopg.connect(url.conninfo()) as conn:
            events = conn.execute("SELECT count(*) FROM zlh_events").fetchone()[0]  # type: ignore[index]
            hashes = conn.execute(f"SELECT count(*) FROM {HASHES_TABLE}").fetchone()[0]  # type: ignore[index]
        assert events == hashes
        print(f"conflicts on the shared stream: {len(conflicts)}")
    finally:
        app.close()
