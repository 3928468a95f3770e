"""Quotas under any sequence of takes and releases: never more slots held than the limit, nothing held twice,
a refused take changes nothing, and replaying the stream gives the same quota."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.application import Application
from hypothesis import given
from hypothesis import strategies as st

from domain.quota import INSTANCES, Quota, QuotaExceededError

SLOTS = [UUID(int=n + 1) for n in range(8)]
STEPS = st.lists(st.tuples(st.sampled_from(["take", "release"]), st.integers(0, len(SLOTS) - 1)), max_size=60)


@given(limit=st.integers(0, 5), steps=STEPS)
def test_a_quota_never_holds_more_than_its_limit(limit: int, steps: list[tuple[str, int]]) -> None:
    quota = Quota(kind=INSTANCES, subject="owner", held=[])
    model: set[UUID] = set()
    for action, n in steps:
        slot = SLOTS[n]
        if action == "take":
            version = quota.version
            try:
                quota.take(slot, limit)
                model.add(slot)
            except QuotaExceededError as exc:
                assert len(model) >= limit and slot not in model and exc.extra["limit"] == limit
                assert quota.version == version  # refused: no event
        else:
            assert quota.release(slot) == (slot in model)
            model.discard(slot)
        assert len(quota.held) == len(set(quota.held)) == len(model) <= limit
        assert set(quota.held) == model
    app = Application[UUID](env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.save(quota)
    assert app.repository.get(quota.id).held == quota.held
