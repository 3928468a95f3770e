"""The durable log and the read side on SQLite and PostgreSQL: persistence, ordering, claims, rebuilds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from domain.operation import Operation, Phase
from projections import instances as instances_view
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from services.infrastructure.database import DatabaseURL
from services.infrastructure.migrations import migrate
from services.infrastructure.store import ZLH, store_env
from services.instances import request_instance
from tests.integration.conftest import poll

pytestmark = pytest.mark.real_services  # the store on real SQLite and PostgreSQL, with concurrent writers


def test_save_load_conflict_and_stable_topics(database_url: str) -> None:
    url = DatabaseURL.parse(database_url)
    migrate(url)
    migrate(url)  # idempotent
    app = ZLH(env=store_env(url))
    try:
        op = Operation(request_key="k", kind="create", instance_id=uuid4(), owner_id=uuid4(), fingerprint="f",
                       params={"name": "alpha", "nested": {"n": 1}})
        app.save(op)
        a, b = app.repository.get(op.id), app.repository.get(op.id)
        a.claim("w1")
        b.claim("w2")
        app.save(a)
        with pytest.raises(IntegrityError):
            app.save(b)  # optimistic concurrency: the second claim loses
        loaded = app.repository.get(op.id)
        assert loaded.phase is Phase.RUNNING and loaded.worker_id == "w1"
        assert loaded.params == {"name": "alpha", "nested": {"n": 1}}
        assert loaded.owner_id == op.owner_id and loaded.created_on == op.created_on
        topics = [n.topic for n in app.recorder.select_notifications(start=1, limit=10)]
        assert topics == ["zlh.Operation.Requested", "zlh.Operation.Claimed"]
    finally:
        app.close()


@pytest.mark.postgres
def test_concurrent_writers_never_make_a_follower_skip(pg_url: str) -> None:
    """8 writer threads append while a follower reads `> last`; it must see every committed event."""
    url = DatabaseURL.parse(pg_url)
    migrate(url)
    app = ZLH(env=store_env(url, pool_size=10))
    stop = threading.Event()
    seen: list[int] = []

    def follow() -> None:
        last = 0
        while True:
            stopping = stop.is_set()  # before the read: a page read once the writers are done is the last one
            page = app.recorder.select_notifications(start=last, limit=500, inclusive_of_start=False)
            seen.extend(n.id for n in page)
            if page:
                last = page[-1].id
            elif stopping:
                return

    def write(count: int) -> None:
        for _ in range(count):
            app.save(Operation(request_key=str(uuid4()), kind="create", instance_id=uuid4(), owner_id=uuid4(),
                               fingerprint="f", params={}))

    follower = threading.Thread(target=follow)
    follower.start()
    writers = [threading.Thread(target=write, args=(60,)) for _ in range(8)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    follower.join()
    committed = [n.id for n in app.recorder.select_notifications(start=1, limit=10_000)]
    app.close()
    assert len(committed) == 480
    assert seen == committed  # in order, nothing skipped, nothing twice


@pytest.mark.postgres
def test_two_provisioning_workers_never_run_an_operation_twice(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two independent containers (own pools, own workers) on one PostgreSQL race for 20 operations."""
    from services.settings import Settings

    url = DatabaseURL.parse(pg_url)
    migrate(url)
    settings = Settings(database_url=pg_url, data_dir=str(tmp_path))
    drivers = [FakeDriver(), FakeDriver()]
    api = Container.build(settings, driver=FakeDriver(), pool_size=4)
    api.start(("projections",))
    owner = uuid4()
    accepted = [request_instance(api.app, owner, f"k{n}", "game", f"s{n}", "minecraft") for n in range(20)]
    workers = [Container.build(settings, driver=d, pool_size=4) for d in drivers]
    try:
        for w in workers:
            w.start(("provisioning",))
        for a in accepted:
            poll(lambda a=a: api.app.repository.get(a.operation_id).phase,
                 lambda p: p in (Phase.SUCCEEDED, Phase.FAILED))
        for a in accepted:
            events = [type(e).__name__ for e in api.app.stream(a.operation_id)]
            assert events.count("Claimed") == 1 and events[-1] == "Succeeded", events
        started = [iid for d in drivers for (m, iid) in d.calls if m == "start_process"]
        assert sorted(map(str, started)) == sorted(str(a.instance_id) for a in accepted)
    finally:
        for c in [*workers, api]:
            c.close()


def test_rebuild_never_shows_readers_an_empty_list(make_container: Callable[..., Container]) -> None:
    container = make_container()
    owner = uuid4()
    accepted = [request_instance(container.app, owner, f"k{n}", "game", f"s{n}", "minecraft") for n in range(30)]
    container.wait_for_projections(max(a.position for a in accepted), ("instances", "operations"))
    expected = {str(a.instance_id) for a in accepted}
    seen_sizes: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen_sizes.append(len(instances_view.list_for_owner(container.db, str(owner))))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    reports: list[tuple[int, int, float]] = []
    try:
        for _ in range(3):
            container.runners["instances"].rebuild(
                on_progress=lambda p: reports.append((p.position, p.head, p.events_per_second)))
    finally:
        done.set()
        for r in readers:
            r.join()
    assert seen_sizes and min(seen_sizes) == 30
    assert reports and all(pos <= head and rate >= 0 for pos, head, rate in reports)
    assert reports[-1][0] >= max(a.position for a in accepted)  # the rebuild reached everything written before
    assert {r["id"] for r in instances_view.list_for_owner(container.db, str(owner))} == expected


def test_concurrent_requests_with_one_key_or_one_name(database_url: str) -> None:
    """24 threads, one key: one operation. 12 threads, 12 keys, one name: one instance, 11 name_taken."""
    from concurrent.futures import ThreadPoolExecutor

    from domain.errors import NameTakenError

    url = DatabaseURL.parse(database_url)
    migrate(url)
    app = ZLH(env=store_env(url, pool_size=12))
    owner = uuid4()
    try:
        with ThreadPoolExecutor(max_workers=24) as pool:
            results = list(pool.map(lambda _: request_instance(app, owner, "k", "game", "same", "minecraft"),
                                    range(24)))
        assert len({r.operation_id for r in results}) == 1
        assert sum(not r.replayed for r in results) == 1

        def other_key(n: int) -> object:
            try:
                return request_instance(app, owner, f"key-{n}", "game", "contested", "minecraft")
            except NameTakenError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=12) as pool:
            outcomes = list(pool.map(other_key, range(12)))
        assert sum(isinstance(o, NameTakenError) for o in outcomes) == 11
        requested = [n for n in app.recorder.select_notifications(start=1, limit=10_000)
                     if n.topic == "zlh.Instance.Requested"]
        assert len(requested) == 2
    finally:
        app.close()


def test_rebuild_all_reads_the_log_once_and_equals_live(make_container: Callable[..., Container]) -> None:
    """`zlh projections rebuild --all`: every projection rebuilt from one pass, in small pages here, equals live."""
    from services.infrastructure.projection_runner import rebuild_all

    container = make_container(workers=("projections",))  # nothing else writes meanwhile
    owner = uuid4()
    accepted = [request_instance(container.app, owner, f"k{n}", "game", f"s{n}", "minecraft") for n in range(12)]
    names = tuple(container.runners)
    assert container.wait_for_projections(max(a.position for a in accepted), names)

    def tables() -> dict[str, list[dict]]:
        return {t.name: sorted(container.db.query(f"SELECT * FROM {t.name}"), key=repr)
                for r in container.runners.values() for t in r.projection.tables}

    live = tables()
    progresses = rebuild_all(list(container.runners.values()), container.app, container.db, page_size=5)
    assert [p.state for p in progresses] == ["done"] * len(names)
    assert tables() == live
    head = container.app.head()
    assert all(r.position() == head for r in container.runners.values())


def test_read_your_writes_across_processes_is_woken_by_notify(make_container: Callable[..., Container]) -> None:
    """An API without the projections (`zlh serve --no-workers`) waits for another process's group: on
    PostgreSQL it listens to `zlh_positions` (the group NOTIFYs in the transaction that moves positions); on
    SQLite, which has no notifications, it re-reads the positions while it waits."""
    workers = make_container(workers=("projections",))
    api = make_container(workers=())
    owner = uuid4()
    for n in range(3):
        accepted = request_instance(api.app, owner, f"k{n}", "game", f"s{n}", "minecraft")
        assert api.wait_for_projections(accepted.position, ("instances", "operations"), timeout=30)
    assert workers.watcher.local_follower and not api.watcher.local_follower
    listener = api.watcher._listener  # what woke it
    assert (listener is not None and listener.is_alive()) == (api.url.dialect == "postgres")
    assert {r["id"] for r in instances_view.list_for_owner(api.db, str(owner))} == {
        str(request_instance(api.app, owner, f"k{n}", "game", f"s{n}", "minecraft").instance_id) for n in range(3)}
