"""What a projection declares: its tables, the event topics it reads, and how it applies them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol


class Cursor(Protocol):
    """What a projection writes through: `%s` placeholders on every dialect, dict rows."""

    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...
    def fetchone(self) -> dict[str, Any] | None: ...
    def fetchall(self) -> list[dict[str, Any]]: ...

    @property
    def rowcount(self) -> int: ...


class Database(Protocol):
    """What a read model's queries need: read-only SQL with `%s` placeholders, dict rows.

    Projections never import the infrastructure that implements it (services.infrastructure.database);
    they are handed one, as repositories are handed a session.
    """

    dialect: str

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Table:
    """A read-model table. `name` is the live name; a rebuild builds `name__shadow` and swaps it in."""

    name: str
    columns: str
    indexes: tuple[tuple[str, str], ...] = ()  # (suffix, "col1, col2")


class Projection(ABC):
    """A read model built from the log. Subclasses set `name`, `tables`, `topics` and `apply`."""

    name: str
    tables: tuple[Table, ...]
    topics: frozenset[str]
    #: Bump whenever the tables or what `apply` writes change: `zlh migrate` then rebuilds the read model.
    version: int = 1

    @abstractmethod
    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        """Apply one decoded event; `t` maps each table's live name to the physical one to write."""

    def after_commit(self, db: Database) -> None:  # noqa: B027 - an optional hook
        """Called after the live tables changed (a page, or a rebuild's swap): export them if needed."""


ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso(ts: datetime) -> str:
    """RFC 3339 UTC with a `Z`, the form every read model stores and the API returns."""
    # isoformat is strftime(ISO_FORMAT) with "+00:00" for the "Z", at a third of the cost (rebuilds call it a lot).
    return ts.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_iso(value: str) -> datetime:
    """The inverse of `iso`: a read model's timestamp back to an aware UTC datetime."""
    return datetime.strptime(value, ISO_FORMAT).replace(tzinfo=UTC)


#: A list's sort key for keyset pagination: the previous page's last (created_at, id).
After = tuple[str, str] | None


def newest_first(db: Database, source: str, where: str, params: Sequence[Any], limit: int, after: After = None,
                 columns: str = "*", prefix: str = "") -> list[dict[str, Any]]:
    """One page of `source` rows matching `where`, newest first by (created_at, id), after `after`.

    Keyset pagination: the page starts right after the previous page's last item, whatever was added
    or removed since, and costs one indexed range scan however deep the page is. `prefix` qualifies the
    sort columns when `source` is a join (`u.`).
    """
    at, ident = f"{prefix}created_at", f"{prefix}id"
    clauses, args = ([where] if where else []), list(params)
    if after is not None:
        clauses.append(f"({at} < %s OR ({at} = %s AND {ident} < %s))")
        args += [after[0], after[0], after[1]]
    condition = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    return db.query(f"SELECT {columns} FROM {source} {condition}ORDER BY {at} DESC, {ident} DESC LIMIT %s",
                    [*args, limit])
