"""Use cases for auditors: the view of the log, any stream's events, oldest first, as plain JSON; and hash-chain checks.

`verify_stream` / `verify_all` recompute the per-stream SHA-256 chains that services/chain.py writes
beside the events (layout in that module's docstring) and tell intact, broken and unchained apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from projections.base import iso
from services.infrastructure.chain import (
    GENESIS,
    ChainedPostgresApplicationRecorder,
    ChainedSQLiteApplicationRecorder,
    ChainEntry,
    ChainRecorder,
    event_hash,
)
from services.infrastructure.store import ZLH

#: Streams read per query by `verify_all`.
VERIFY_BATCH = 2000

_ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def to_json(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def _event_json(app: ZLH, stored: Any) -> dict[str, Any]:
    """One stored event as `{"version", "type", "timestamp", "data"}`."""
    event = app.mapper.to_domain_event(stored)
    return {
        "version": event.originator_version,
        "type": stored.topic,
        "timestamp": iso(event.timestamp),
        "data": {k: to_json(v) for k, v in vars(event).items() if k not in _ENVELOPE},
    }


def stream_events(app: ZLH, stream_id: UUID) -> list[dict[str, Any]]:
    """`[{"version", "type", "timestamp", "data"}]` for one stream, oldest first."""
    return [_event_json(app, stored) for stored in app.recorder.select_events(stream_id)]


# --- Tamper evidence: verify the hash chains written by services/chain.py ---------------------------

INTACT, BROKEN, UNCHAINED, MISSING = "intact", "broken", "unchained", "missing"


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on one stream's hash chain.

    `status` is one of:

    * ``intact``: every version 1..N has its event and its hash row and the chain recomputes (`ok`).
    * ``broken``: `first_broken_version` is the first version where the stored events and the
      chain disagree (content altered, event or hash row deleted or added, chain relinked).
    * ``unchained``: nothing disagrees, but versions `unchained_from`..`unchained_to` have no hash
      rows at all because they were stored before chaining existed (a database from before the
      hash chain; a fresh database never has them). They cannot be verified: `ok` is False, but
      this is not evidence of tampering. Appends to such a stream start a new chain at genesis, so
      an unchained stretch is always a prefix (versions 1..k); a missing hash row *after* the first
      hash row is reported as broken.
    * ``missing``: neither events nor hash rows (no such stream).

    `checked` counts the events whose hash was recomputed and matched; `head` is the last good hash.
    """

    ok: bool
    checked: int
    first_broken_version: int | None
    reason: str
    stream_id: UUID | str | None = None
    status: str = INTACT
    unchained_from: int | None = None
    unchained_to: int | None = None
    head: str | None = None


def _chain_recorder(app: ZLH) -> ChainRecorder:
    recorder = app.recorder
    if not isinstance(recorder, ChainedSQLiteApplicationRecorder | ChainedPostgresApplicationRecorder):
        raise TypeError(f"{type(recorder).__name__} keeps no hash chain (use services.infrastructure.store.store_env)")
    return recorder


def verify_stream(app: ZLH, stream_id: UUID | str) -> VerifyResult:
    """Recompute a stream's chain from the raw stored events (topic and state bytes, not decoded)."""
    return verify_entries(stream_id, _chain_recorder(app).select_chain(stream_id))


def verify_entries(stream_id: UUID | str, entries: Sequence[ChainEntry]) -> VerifyResult:
    """The verdict on one stream, given everything stored for it (see `ChainRecorder.select_chain`)."""

    def broken(version: int, why: str) -> VerifyResult:
        return VerifyResult(False, checked, version, f"broken at version {version}: {why}", stream_id, BROKEN,
                            unchained_from, unchained_to, head)

    if not entries:
        return VerifyResult(False, 0, None, "no such stream", stream_id, MISSING)
    by_version = {e.version: e for e in entries}
    checked, head = 0, None
    unchained_from = unchained_to = None
    expected_prev: str | None = None  # None: no hash row seen yet
    for version in range(1, entries[-1].version + 1):
        entry = by_version.get(version)
        if entry is None:
            return broken(version, "no event and no hash row, but later versions exist")
        if entry.event is None:
            return broken(version, "the event is missing (its hash row is there)")
        if entry.hash is None:
            if expected_prev is not None:
                return broken(version, "the hash row is missing")
            unchained_from, unchained_to = unchained_from or version, version
            continue
        if expected_prev is None:
            # The chain starts here, at version 1 or after an unchained prefix, so it must start at genesis.
            # Linking further back means the hash row(s) before it were deleted.
            if entry.prev_hash != GENESIS and version > 1:
                return broken(version - 1, f"the hash row is missing (version {version} links back to it)")
            expected_prev = GENESIS
        if entry.prev_hash != expected_prev:
            what = "genesis" if expected_prev == GENESIS else f"the hash of version {version - 1}"
            return broken(version, f"prev_hash is not {what}")
        topic, state = entry.event.topic, entry.event.state
        if topic is None or state is None:
            return broken(version, "the stored topic or state is NULL")
        if event_hash(expected_prev, stream_id, version, topic, state) != entry.hash:
            return broken(version, "the stored event does not match its hash (event or hash row altered)")
        checked += 1
        expected_prev = head = entry.hash
    if unchained_from is not None:
        tail = f"; versions {unchained_to + 1}..{entries[-1].version} verified" if checked else ""
        return VerifyResult(
            False, checked, None,
            f"unchained from version {unchained_from} to {unchained_to} (no hash rows: stored before hash "
            f"chaining){tail}", stream_id, UNCHAINED, unchained_from, unchained_to, head,
        )
    return VerifyResult(True, checked, None, f"intact: {checked} events chained", stream_id, INTACT, head=head)


def verify_all(app: ZLH, progress_callback: Callable[[int, int], None] | None = None) -> list[VerifyResult]:
    """Verify every stream that has an event or a hash row; `progress_callback(done, total)` after each."""
    recorder = _chain_recorder(app)
    stream_ids = sorted(recorder.select_stream_ids(), key=str)
    results = []
    for start in range(0, len(stream_ids), VERIFY_BATCH):
        batch = stream_ids[start:start + VERIFY_BATCH]
        chains = recorder.select_chains(batch)  # one query for the batch: a round trip per stream was the cost
        results.extend(verify_entries(stream_id, chains[stream_id]) for stream_id in batch)
        if progress_callback is not None:
            progress_callback(len(results), len(stream_ids))
    return results


def stream_events_tolerant(app: ZLH, stream_id: UUID) -> list[dict[str, Any]]:
    """Like `stream_events`, but an event that no longer decodes (say, altered bytes) is listed, not fatal."""
    events = []
    for stored in app.recorder.select_events(stream_id):
        try:
            events.append(_event_json(app, stored))
        except Exception as exc:
            events.append({"version": stored.originator_version, "type": stored.topic,
                           "error": f"undecodable: {type(exc).__name__}: {exc}"})
    return events
