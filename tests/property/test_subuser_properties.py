"""Hypothesis: any sequence of invitations, permission changes and removals keeps the access check, the read model
and the membership streams in agreement with a plain model of who may do what."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from uuid import UUID

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain.errors import DomainError
from domain.ids import user_id_for_email
from domain.subuser import PERMISSIONS, Subuser, SubuserExistsError, SubuserNotFoundError, SubuserRuleError, subuser_id
from projections import subusers as subusers_view
from projections.subusers import SubusersProjection
from services import subusers
from services.infrastructure.database import DatabaseURL, ReadModelDB
from services.infrastructure.migrations import migrate
from services.infrastructure.projection_runner import ProjectionRunner
from services.infrastructure.store import ZLH, store_env
from services.instances import request_instance
from services.lifecycle import NotFoundError
from services.server_access import MANAGE, MEMBER, PermissionDeniedError, authorize

OWNER = UUID(int=1)
EMAILS = [f"u{n}@example.com" for n in range(3)]
permission_lists = st.lists(st.sampled_from([*PERMISSIONS, "root"]), max_size=5)


class MembershipMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        url = DatabaseURL.parse(f"sqlite:///{Path(self.tmp.name)}/zlh.sqlite3")
        migrate(url)
        self.app, self.db = ZLH(env=store_env(url)), ReadModelDB(url)
        self.runner = ProjectionRunner(self.app, self.db, SubusersProjection())
        self.instance_id = request_instance(self.app, OWNER, "k", "game", "box", "minecraft").instance_id
        self.grant = authorize(self.app, OWNER, False, self.instance_id, MANAGE)
        self.model: dict[str, list[str]] = {}

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.app.close()
        self.tmp.cleanup()

    @rule(email=st.sampled_from(EMAILS), permissions=permission_lists)
    def invite(self, email: str, permissions: list[str]) -> None:
        try:
            subusers.invite(self.app, self.grant, OWNER, email, permissions)
        except SubuserExistsError:
            assert email in self.model
            return
        except SubuserRuleError:
            assert "root" in permissions
            return
        assert email not in self.model and "root" not in permissions
        self.model[email] = [p for p in PERMISSIONS if p in permissions]

    @rule(email=st.sampled_from(EMAILS), permissions=permission_lists)
    def change(self, email: str, permissions: list[str]) -> None:
        try:
            subusers.change(self.app, self.grant, OWNER, user_id_for_email(email), permissions)
        except SubuserNotFoundError:
            assert email not in self.model
            return
        except SubuserRuleError:
            assert "root" in permissions
            return
        self.model[email] = [p for p in PERMISSIONS if p in permissions]

    @rule(email=st.sampled_from(EMAILS))
    def remove(self, email: str) -> None:
        try:
            subusers.remove(self.app, self.grant, OWNER, user_id_for_email(email))
        except SubuserNotFoundError:
            assert email not in self.model
            return
        del self.model[email]

    @invariant()
    def access_follows_the_model(self) -> None:
        for email in EMAILS:
            user = user_id_for_email(email)
            held = self.model.get(email)
            for need in (*PERMISSIONS, MEMBER, MANAGE):
                try:
                    grant = authorize(self.app, user, False, self.instance_id, need)
                except NotFoundError:
                    assert held is None
                    continue
                except PermissionDeniedError:
                    assert held is not None and (need == MANAGE or need not in held)
                    continue
                except DomainError as exc:  # pragma: no cover - a failure message
                    raise AssertionError(f"unexpected {exc!r}") from exc
                assert held is not None and need != MANAGE and (need == MEMBER or need in held)
                assert grant.role == "subuser" and list(grant.permissions) == held

    @invariant()
    def the_read_model_and_a_replay_agree(self) -> None:
        self.runner.catch_up()
        rows = subusers_view.list_for_instance(self.db, str(self.instance_id))
        assert {r["email"]: r["permissions"] for r in rows} == self.model
        for email in EMAILS:
            sid = subuser_id(self.instance_id, user_id_for_email(email))
            stored = self.app.find(sid, Subuser)
            if stored is None:
                assert email not in self.model
                continue
            replayed = self.app.repository.get(sid, version=stored.version)
            assert (replayed.active, replayed.permissions) == (stored.active, stored.permissions)
            assert stored.active == (email in self.model)


MembershipMachine.TestCase.settings = settings(max_examples=15, stateful_step_count=10, deadline=None)
TestMemberships = MembershipMachine.TestCase
