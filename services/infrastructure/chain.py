"""Tamper-evident log: every stored event is a link in its stream's SHA-256 hash chain.

The chain lives in a side table, ``zlh_event_hashes``, one row per stored event::

    (originator_id, originator_version, prev_hash, hash)   PRIMARY KEY (originator_id, originator_version)

and is written **in the same transaction that inserts the events**, from the bytes actually stored
(topic and encoded, possibly compressed or encrypted, state), so it is independent of the domain
classes and of every read model. The library's own insert path is used as it is (no private method
of it is overridden), and the database itself makes sure no event is stored without its link:

Canonical layout of one link (all integers big-endian)::

    hash = sha256( prev_hash_raw                 32 bytes: bytes.fromhex(prev_hash)
                 || u16(len(id)) || id           id: str(originator_id) as UTF-8; for a UUID the
                                                 lowercase hyphenated 36-character form
                 || i64(originator_version)      8 bytes, signed
                 || u32(len(topic)) || topic     topic as UTF-8
                 || state )                      the stored state bytes, as is (last, so no length)

``hash`` and ``prev_hash`` are stored as 64 lowercase hex characters. ``prev_hash`` is the stored
``hash`` of version - 1 of the same stream, or :data:`GENESIS` (64 zeros) for version 1. An event
whose predecessor exists but has no hash row (a database written before chaining existed) starts a
new chain at :data:`GENESIS` too; :func:`services.audit.verify_stream` reports the versions before
it as *unchained*, never as verified.

- **PostgreSQL** computes the links itself, in a statement-level ``AFTER INSERT`` trigger on the
  events table (:func:`postgres_chain_ddl`, the same layout in SQL): whatever inserts an event, the
  library's path, a future version's or a hand-written INSERT, gets its link in that transaction.
  It runs after the library has taken the events table's ``EXCLUSIVE`` lock, so the predecessors it
  reads are final and concurrent appenders cannot fork a chain.
- **SQLite** has no SHA-256: :class:`ChainedSQLiteApplicationRecorder` computes the links in Python
  (:func:`event_hash`) and writes them right before the events, through the library's public
  ``insert_events_statement``; a ``BEFORE INSERT`` trigger (:func:`sqlite_chain_ddl`) refuses any event
  that arrives without its hash row, so no other path can store an event unchained.

Events of one stream inside one insert batch are chained in version order; the loser of a version
race fails on a primary key, as it always has. Verification is always the Python :func:`event_hash`.
The DDL (table and triggers) is made by ``zlh migrate`` (services.infrastructure.migrations).

What this does *not* protect (no secret key is involved): anybody who can write to the database
can recompute a whole chain after editing it, and can cut a stream's tail (its last events and
their hash rows together). Anchor the heads elsewhere (``zlh audit stream ID --verify`` prints
the head hash) to detect that. Snapshots are not chained either: they are derived data.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ProgrammingError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from psycopg.sql import SQL, Composed, Identifier, Literal

from services.infrastructure.group_commit import GroupCommit

HASHES_TABLE = "zlh_event_hashes"
GENESIS = "0" * 64


def event_hash(prev_hash: str, originator_id: UUID | str, originator_version: int, topic: str, state: bytes) -> str:
    """One link of the chain, per the layout in the module docstring; 64 lowercase hex characters."""
    ident = str(originator_id).encode("utf-8")
    topic_bytes = topic.encode("utf-8")
    digest = hashlib.sha256()
    digest.update(bytes.fromhex(prev_hash))
    digest.update(struct.pack(">H", len(ident)))
    digest.update(ident)
    digest.update(struct.pack(">q", originator_version))
    digest.update(struct.pack(">I", len(topic_bytes)))
    digest.update(topic_bytes)
    digest.update(bytes(state))
    return digest.hexdigest()


@dataclass(frozen=True)
class HashRow:
    originator_id: Any  # UUID (or str with ORIGINATOR_ID_TYPE=text): the stored event's own id object
    originator_version: int
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainEntry:
    """What the store holds for one version of a stream: the event, its hash row, or both."""

    version: int
    event: StoredEvent | None
    prev_hash: str | None
    hash: str | None


def predecessors_to_read(stored_events: Sequence[StoredEvent]) -> list[tuple[Hashable, int]]:
    """(originator_id, version - 1) for each stream's first event in the batch, when that is not version 1."""
    first: dict[Hashable, int] = {}
    for s in stored_events:
        v = first.get(s.originator_id)
        if v is None or s.originator_version < v:
            first[s.originator_id] = s.originator_version
    return [(oid, v - 1) for oid, v in first.items() if v > 1]


def chain_rows(
    stored_events: Sequence[StoredEvent], stored_hashes: Mapping[tuple[Hashable, int], str]
) -> list[HashRow]:
    """The hash rows for a batch, chained per stream in version order.

    `stored_hashes` maps (originator_id, version) to the stored hash of the predecessors that
    :func:`predecessors_to_read` asked for (missing: no hash row, so the batch starts a chain).
    """
    computed: dict[tuple[Hashable, int], str] = {}
    rows = []
    for s in sorted(stored_events, key=lambda e: (str(e.originator_id), e.originator_version)):
        key = (s.originator_id, s.originator_version - 1)
        prev = computed.get(key) or stored_hashes.get(key) or GENESIS
        digest = event_hash(prev, s.originator_id, s.originator_version, s.topic, s.state)
        computed[(s.originator_id, s.originator_version)] = digest
        rows.append(HashRow(s.originator_id, s.originator_version, prev, digest))
    return rows


class ChainedSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    """The library's SQLite recorder, inserting each batch's hash rows first, in the same transaction.

    SQLite has no SHA-256 of its own, so the links are computed here (`event_hash`) and written just
    before the events, through the library's public `insert_events_statement`. The database guards
    the rule itself: the trigger `zlh_chain_guard` (made by `zlh migrate`) refuses any event that
    arrives without its hash row, so no other insert path, a library upgrade's included, can store
    an event unchained.
    """

    hashes_table_name = HASHES_TABLE

    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name)
        t = self.hashes_table_name
        self.insert_hashes_statement = (
            f"INSERT INTO {t} (originator_id, originator_version, prev_hash, hash) VALUES (?,?,?,?) "
            "ON CONFLICT (originator_id, originator_version) DO NOTHING"  # as on PostgreSQL
        )
        self.select_hash_statement = f"SELECT hash FROM {t} WHERE originator_id=? AND originator_version=?"
        self.select_chain_statement = (
            f"SELECT 'e' AS kind, originator_version, topic, state, NULL AS prev_hash, NULL AS hash "
            f"FROM {self.events_table_name} WHERE originator_id=? "
            f"UNION ALL SELECT 'h', originator_version, NULL, NULL, prev_hash, hash FROM {t} WHERE originator_id=?"
        )
        self.select_stream_ids_statement = (
            f"SELECT originator_id FROM {self.events_table_name} UNION SELECT originator_id FROM {t}"
        )

    def _db_id(self, originator_id: UUID | str) -> str:
        return originator_id.hex if isinstance(originator_id, UUID) else originator_id

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Hash rows, then events, in one transaction; the events' notification ids, as the library returns.

        The predecessors' hashes are read first, in a read transaction of their own: a predecessor (version
        N - 1 of a stream we append version N to) was committed before its aggregate could be loaded, so it
        is final; and a write transaction that starts with a write waits for SQLite's lock (busy timeout)
        where one that read first would fail at once with "database is locked".
        """
        stored: dict[tuple[Hashable, int], str] = {}
        wanted = predecessors_to_read(stored_events)
        if wanted:
            with self.datastore.transaction(commit=False) as c:
                for oid, version in wanted:
                    c.execute(self.select_hash_statement, (self._db_id(oid), version))  # type: ignore[arg-type]
                    row = c.fetchone()
                    if row is not None:
                        stored[(oid, version)] = row["hash"]
        with self.datastore.transaction(commit=True) as c:
            c.executemany(self.insert_hashes_statement, [
                (self._db_id(r.originator_id), r.originator_version, r.prev_hash, r.hash)
                for r in chain_rows(stored_events, stored)
            ])
            notification_ids = []
            for s in stored_events:
                c.execute(self.insert_events_statement,
                          (self._db_id(s.originator_id), s.originator_version, s.topic, s.state))
                notification_ids.append(c.lastrowid)
            return notification_ids

    def select_chain(self, originator_id: UUID | str) -> list[ChainEntry]:
        """Every event and hash row of a stream, by version, read in one snapshot."""
        oid = self._db_id(originator_id)
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.select_chain_statement, (oid, oid))
            return _merge(originator_id, c.fetchall())

    def select_stream_ids(self) -> list[UUID | str]:
        """Every stream with an event or a hash row."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.select_stream_ids_statement)
            return [self.convert_originator_id(row["originator_id"]) for row in c.fetchall()]

    def select_chains(self, originator_ids: Sequence[UUID | str]) -> dict[UUID | str, list[ChainEntry]]:
        """`select_chain` for many streams in one snapshot and two statements (what `verify_all` reads)."""
        if not originator_ids:
            return {}
        by_db_id = {self._db_id(oid): oid for oid in originator_ids}
        marks = ",".join("?" * len(by_db_id))
        t = self.hashes_table_name
        sql = (f"SELECT 'e' AS kind, originator_id, originator_version, topic, state, NULL AS prev_hash, NULL AS hash "
               f"FROM {self.events_table_name} WHERE originator_id IN ({marks}) "
               f"UNION ALL SELECT 'h', originator_id, originator_version, NULL, NULL, prev_hash, hash FROM {t} "
               f"WHERE originator_id IN ({marks})")
        ids = list(by_db_id)
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, ids + ids)
            return _merge_many({db_id: [] for db_id in ids}, by_db_id, c.fetchall())


def sqlite_chain_ddl(events_table: str = "stored_events") -> list[str]:
    """The hash table and the guard that refuses an event stored without its hash row (SQLite)."""
    return [
        f"CREATE TABLE IF NOT EXISTS {HASHES_TABLE} ("
        "originator_id TEXT NOT NULL, originator_version INTEGER NOT NULL, "
        "prev_hash TEXT NOT NULL, hash TEXT NOT NULL, "
        "PRIMARY KEY (originator_id, originator_version)) WITHOUT ROWID",
        "CREATE TRIGGER IF NOT EXISTS zlh_chain_guard BEFORE INSERT ON " + events_table + " "
        f"WHEN NOT EXISTS (SELECT 1 FROM {HASHES_TABLE} h WHERE h.originator_id = NEW.originator_id "
        "AND h.originator_version = NEW.originator_version) "
        "BEGIN SELECT RAISE(ABORT, 'zlh: an event must be stored with its hash row (zlh_event_hashes)'); END",
    ]


#: `event_hash` in SQL, for one row `{e}` (originator_id, originator_version, topic, state) and `{prev}`.
#: int2send/int4send/int8send are big-endian; the signed int2 caps ids at 32767 bytes (an error, not a
#: wrong hash, beyond). The tests verify every chain written this way with the Python `event_hash`.
_SQL_LINK = (
    "encode(sha256(decode({prev}, 'hex')"
    " || int2send(octet_length(convert_to({e}.originator_id::text, 'UTF8'))::int2)"
    " || convert_to({e}.originator_id::text, 'UTF8')"
    " || int8send({e}.originator_version)"
    " || int4send(octet_length(convert_to({e}.topic, 'UTF8')))"
    " || convert_to({e}.topic, 'UTF8')"
    " || {e}.state), 'hex')"
)


def postgres_chain_ddl(schema: str, events_table: str) -> list[SQL | Composed]:
    """The hash table, and a statement-level trigger that chains every batch the events table receives.

    The trigger sees the inserted rows as a transition table and links them in one set-based statement:
    `anchors` are the batch's events whose predecessor is not in the batch (their prev_hash is the stored
    hash of version - 1, or genesis); the recursion walks on through the batch. It runs inside the
    inserting transaction, after the library has locked the events table (EXCLUSIVE), so the predecessors
    it reads are final and concurrent appenders cannot fork a chain. Any insert path gets chained: the
    library's, a future version's, or a hand-written INSERT.
    """
    fmt = {"schema": Identifier(schema), "events": Identifier(events_table), "hashes": Identifier(HASHES_TABLE),
           "genesis": Literal(GENESIS)}
    link_anchor = _SQL_LINK.format(prev="c.prev_hash", e="c")
    link_next = _SQL_LINK.format(prev="l.hash", e="b")
    return [
        SQL("CREATE TABLE IF NOT EXISTS {schema}.{hashes} ("
            "originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
            "prev_hash text NOT NULL, hash text NOT NULL, "
            "PRIMARY KEY (originator_id, originator_version))").format(**fmt),
        SQL("CREATE OR REPLACE FUNCTION {schema}.zlh_chain_batch() RETURNS trigger LANGUAGE plpgsql AS $fn$ "
            "BEGIN "
            "WITH RECURSIVE chain AS ("
            " SELECT b.*, coalesce(("
            "  SELECT h.hash FROM {schema}.{hashes} h"
            "  WHERE h.originator_id = b.originator_id AND h.originator_version = b.originator_version - 1"
            " ), {genesis}) AS prev_hash"
            " FROM inserted b WHERE NOT EXISTS ("
            "  SELECT 1 FROM inserted p WHERE p.originator_id = b.originator_id"
            "  AND p.originator_version = b.originator_version - 1)"
            "), linked AS ("
            " SELECT c.originator_id, c.originator_version, c.prev_hash, " + link_anchor + " AS hash FROM chain c"
            " UNION ALL"
            " SELECT b.originator_id, b.originator_version, l.hash, " + link_next + " FROM linked l JOIN inserted b"
            " ON b.originator_id = l.originator_id AND b.originator_version = l.originator_version + 1"
            ") INSERT INTO {schema}.{hashes} (originator_id, originator_version, prev_hash, hash)"
            " SELECT originator_id, originator_version, prev_hash, hash FROM linked"
            " ON CONFLICT (originator_id, originator_version) DO NOTHING; "
            "RETURN NULL; "
            "END $fn$").format(**fmt),
        SQL("DROP TRIGGER IF EXISTS zlh_chain ON {schema}.{events}").format(**fmt),
        SQL("CREATE TRIGGER zlh_chain AFTER INSERT ON {schema}.{events} REFERENCING NEW TABLE AS inserted "
            "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.zlh_chain_batch()").format(**fmt),
    ]


class ChainedPostgresApplicationRecorder(PostgresApplicationRecorder):
    """The library's PostgreSQL recorder, its insert unchanged (the database chains every insert: see
    `postgres_chain_ddl`) but shared by concurrent saves (group commit, services/infrastructure/group_commit.py),
    plus the reads the auditors need."""

    hashes_table_name = HASHES_TABLE

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        if self.datastore.enable_db_functions:
            # That insert path takes no table lock: concurrent appenders could then fork a chain.
            raise ProgrammingError("the hash chain needs POSTGRES_ENABLE_DB_FUNCTIONS off")
        self.check_identifier_length(self.hashes_table_name)
        fmt = {
            "schema": Identifier(self.datastore.schema),
            "events": Identifier(self.events_table_name),
            "hashes": Identifier(self.hashes_table_name),
        }
        self.select_chain_statement = SQL(
            "SELECT 'e' AS kind, originator_version, topic, state, NULL::text AS prev_hash, NULL::text AS hash "
            "FROM {schema}.{events} WHERE originator_id = %s "
            "UNION ALL SELECT 'h', originator_version, NULL, NULL, prev_hash, hash "
            "FROM {schema}.{hashes} WHERE originator_id = %s"
        ).format(**fmt)
        self.select_stream_ids_statement = SQL(
            "SELECT originator_id FROM {schema}.{events} UNION SELECT originator_id FROM {schema}.{hashes}"
        ).format(**fmt)
        self.group_commit = GroupCommit(lambda events: PostgresApplicationRecorder.insert_events(self, events))
        self.select_chains_statement = SQL(
            "SELECT 'e' AS kind, originator_id, originator_version, topic, state, NULL::text AS prev_hash, "
            "NULL::text AS hash FROM {schema}.{events} WHERE originator_id = ANY(%s) "
            "UNION ALL SELECT 'h', originator_id, originator_version, NULL, NULL, prev_hash, hash "
            "FROM {schema}.{hashes} WHERE originator_id = ANY(%s)"
        ).format(**fmt)

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """The library's insert, in a transaction shared with the saves arriving meanwhile (group commit)."""
        if not stored_events or any(v is not None for v in kwargs.values()):  # the library passes tracking=None
            return super().insert_events(stored_events, **kwargs)
        return self.group_commit.insert(stored_events)

    def select_chain(self, originator_id: UUID | str) -> list[ChainEntry]:
        """Every event and hash row of a stream, by version, read in one snapshot (one statement)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_chain_statement, (originator_id, originator_id))
            return _merge(originator_id, curs.fetchall())

    def select_stream_ids(self) -> list[UUID | str]:
        """Every stream with an event or a hash row."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_stream_ids_statement)
            return [row["originator_id"] for row in curs.fetchall()]

    def select_chains(self, originator_ids: Sequence[UUID | str]) -> dict[UUID | str, list[ChainEntry]]:
        """`select_chain` for many streams in one statement (what `verify_all` reads, a batch at a time)."""
        if not originator_ids:
            return {}
        ids = list(dict.fromkeys(originator_ids))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_chains_statement, (ids, ids))
            return _merge_many({oid: [] for oid in ids}, {oid: oid for oid in ids}, curs.fetchall())


ChainRecorder = ChainedSQLiteApplicationRecorder | ChainedPostgresApplicationRecorder


def _merge_many(rows_by_id: dict[Any, list[Any]], ids: Mapping[Any, UUID | str],
                rows: Sequence[Any]) -> dict[UUID | str, list[ChainEntry]]:
    """Rows of several streams (with their `originator_id` column) → each stream's entries, by version."""
    for row in rows:
        rows_by_id[row["originator_id"]].append(row)
    return {ids[db_id]: _merge(ids[db_id], stream_rows) for db_id, stream_rows in rows_by_id.items()}


def _merge(originator_id: UUID | str, rows: Sequence[Any]) -> list[ChainEntry]:
    events: dict[int, StoredEvent] = {}
    hashes: dict[int, tuple[str, str]] = {}
    for row in rows:
        version = int(row["originator_version"])
        if row["kind"] == "e":
            state = row["state"]
            events[version] = StoredEvent(originator_id=originator_id, originator_version=version, topic=row["topic"],
                                          state=bytes(state) if state is not None else None)  # type: ignore[arg-type]
        else:
            hashes[version] = (row["prev_hash"], row["hash"])
    return [
        ChainEntry(v, events.get(v), *(hashes.get(v) or (None, None)))
        for v in sorted(events.keys() | hashes.keys())
    ]
