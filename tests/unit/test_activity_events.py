"""Events recorded before actors existed still decode, and the activity read model reads them right."""

from __future__ import annotations

import json
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from domain.activity import InstanceActivity
from domain.operation import Operation
from services.infrastructure.database import DatabaseURL
from services.infrastructure.store import ZLH, store_env


def test_an_operation_requested_before_actor_and_origin_decodes_with_the_owner_as_actor() -> None:
    app = ZLH(env=store_env(DatabaseURL.parse("memory://activity-events")))  # the library's in-memory store
    try:
        owner = UUID(int=5)
        op = Operation(request_key="k", kind="start", instance_id=UUID(int=6), owner_id=owner, fingerprint="f",
                       params={"action": "start"})
        app.save(op)
        stored = next(iter(app.recorder.select_events(op.id)))
        state = json.loads(stored.state)
        assert {"actor_id", "origin"} <= set(state)
        del state["actor_id"], state["origin"]  # as written by the code before this change
        old = StoredEvent(originator_id=stored.originator_id, originator_version=1, topic=stored.topic,
                          state=json.dumps(state).encode())
        event = app.mapper.to_domain_event(old)
        assert event.actor_id is None and event.origin is None
        aggregate = event.mutate(None)
        assert aggregate.actor_id == owner and aggregate.origin is None
    finally:
        app.close()


def test_console_commands_and_file_writes_keep_no_unstorable_text_and_no_contents() -> None:
    activity = InstanceActivity(instance_id=UUID(int=9))
    activity.console_command(UUID(int=1), "say hi\x00there" + "!" * 2000)
    activity.file_written(UUID(int=1), "/a\x07b.txt", 12)
    sent, written = activity.collect_events()[1:]
    assert sent.command.startswith("say hi\ufffdthere") and len(sent.command) == 1000
    assert (written.path, written.size) == ("/a\ufffdb.txt", 12)
    assert not hasattr(written, "content")
