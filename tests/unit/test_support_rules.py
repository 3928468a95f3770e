"""Pure rules of the support desk: attachment sniffing, ticket statuses and notes, matching mail, the soak report."""

from __future__ import annotations

import io
import tarfile
import zipfile
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.attachment import (
    MAX_ATTACHMENT_BYTES,
    AttachmentDisguisedError,
    AttachmentRefusedError,
    AttachmentTooLargeError,
    classify,
    safe_name,
    sniff,
)
from domain.errors import IllegalTransitionError
from domain.mail import decide, is_automatic, reply_address, ticket_number_in
from domain.soak import RepairRecord, soak_report
from domain.support import DuplicateMessageError, SupportTicket

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 64
PE = b"MZ\x90\x00" + b"\x00" * 64


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("a.txt", "hello")
    return buffer.getvalue()


def _tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as t:
        info = tarfile.TarInfo("a.txt")
        info.size = 5
        t.addfile(info, io.BytesIO(b"hello"))
    return buffer.getvalue()


@pytest.mark.parametrize(("data", "kind"), [
    (PNG, "image/png"), (b"\xff\xd8\xff\xe0" + b"\x00" * 8, "image/jpeg"), (b"GIF89a...", "image/gif"),
    (b"%PDF-1.7\n", "application/pdf"), (_zip(), "application/zip"), (_tar(), "application/x-tar"),
    (b"\x1f\x8b\x08\x00", "application/gzip"), (ELF, "application/x-executable"),
    (PE, "application/x-msdownload"), (b"#!/bin/sh\nrm -rf /\n", "text/x-script"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"), ("[12:00] Server started ✓\n".encode(), "text/plain"),
    (b"\x00\x01\x02binary", "application/octet-stream"),
])
def test_sniff_reads_the_bytes(data: bytes, kind: str) -> None:
    assert sniff(data) == kind


@pytest.mark.parametrize(("name", "data"), [
    ("screenshot.png", ELF), ("photo.JPG", PE), ("latest.log", PNG), ("notes.txt", _zip()),
    ("server.properties", ELF), ("world.zip", b"#!/bin/sh\n"), ("invoice.pdf", b"<html>"),
])
def test_a_disguised_file_is_refused(name: str, data: bytes) -> None:
    with pytest.raises(AttachmentDisguisedError) as refused:
        classify(name, data)
    assert refused.value.code == "attachment_disguised" and name in refused.value.message


@pytest.mark.parametrize(("name", "data", "kind"), [
    ("screenshot.png", PNG, "image/png"), ("latest.log", b"[INFO] Done\n", "text/plain"),
    ("modpack.jar", _zip(), "application/zip"), ("world.mca", b"\x00\x00\x02region", "application/octet-stream"),
    ("tool", ELF, "application/x-executable"), ("backup.tar", _tar(), "application/x-tar"),
])
def test_an_honest_file_is_kept_with_its_sniffed_type(name: str, data: bytes, kind: str) -> None:
    assert classify(name, data) == kind


def test_empty_and_oversized_files_are_refused() -> None:
    with pytest.raises(AttachmentRefusedError):
        classify("a.txt", b"")
    with pytest.raises(AttachmentTooLargeError) as refused:
        classify("a.bin", b"\x00" * (MAX_ATTACHMENT_BYTES + 1))
    assert refused.value.code == "too_large"
    assert classify("a.bin", b"\x00" * MAX_ATTACHMENT_BYTES) == "application/octet-stream"


@pytest.mark.parametrize(("given", "expected"), [
    ("../../etc/passwd", "passwd"), ("C:\\Users\\a\\crash.log", "crash.log"), ("a\x00b\r\n.txt", "a_b_.txt"),
    ("", "attachment"), ("...", "attachment"), ("x" * 300 + ".png", "x" * 116 + ".png"), ("ok name.pdf", "ok name.pdf"),
])
def test_safe_name(given: str, expected: str) -> None:
    assert safe_name(given) == expected


def _ticket() -> SupportTicket:
    return SupportTicket.open("ZLH-20260302-0001", uuid4(), "alice@example.com", "Lag", "help", None)


def test_statuses_follow_who_wrote_last_and_notes_change_nothing() -> None:
    ticket = _ticket()
    staff, owner = uuid4(), ticket.owner_id
    ticket.reply(staff, staff=True, message="try a restart")
    assert ticket.status == "waiting_on_customer"
    ticket.add_note(staff, "customer is on the old plan")
    assert ticket.status == "waiting_on_customer" and ticket.replies[-1]["message"] == "try a restart"
    ticket.reply(owner, staff=False, message="still lagging")
    assert ticket.status == "open"
    ticket.close(staff)
    with pytest.raises(IllegalTransitionError):
        ticket.reply(staff, staff=True, message="one more thing")
    ticket.reply(owner, staff=False, message="it broke again", via="email", ref="email:<a@b>")
    assert ticket.status == "open"
    assert [type(e).__name__ for e in ticket.collect_events()][-2:] == ["Reopened", "Replied"]
    with pytest.raises(DuplicateMessageError):
        ticket.reply(owner, staff=False, message="it broke again", via="email", ref="email:<a@b>")
    with pytest.raises(IllegalTransitionError):
        ticket.reopen(staff)
    assert ticket.customer_attachments() == set()


def test_assignment_records_only_changes() -> None:
    ticket = _ticket()
    staff = uuid4()
    assert ticket.assign(staff, staff) is True
    assert ticket.assign(staff, staff) is False
    assert ticket.assign(None, staff) is True and ticket.assignee_id is None


def test_ticket_addresses() -> None:
    assert reply_address("ZLH-20260302-0001", "zlh.example") == "support+ZLH-20260302-0001@zlh.example"
    assert ticket_number_in(["support+zlh-20260302-0001@ZLH.example"], "zlh.example") == ("ZLH-20260302-0001", True)
    assert ticket_number_in(["<support+ZLH-20260302-0001@zlh.example>"], "zlh.example")[0] == "ZLH-20260302-0001"
    assert ticket_number_in(["support+../../etc@zlh.example"], "zlh.example") == (None, True)
    assert ticket_number_in(["support+ZLH-20260302-0001@evil.example"], "zlh.example") == (None, False)
    assert ticket_number_in(["support@zlh.example", "bob@x"], "zlh.example") == (None, False)


def test_decide_matches_only_the_owner_and_no_robot() -> None:
    assert decide("Alice@Example.com", "alice@example.com", {}) is None
    assert decide(None, "alice@example.com", {}) == "unknown_ticket"
    assert decide("alice@example.com", "mallory@example.com", {}) == "sender_mismatch"
    failed = {"authentication-results": "mx.zlh.example; spf=pass; dkim=none; dmarc=fail header.from=example.com"}
    assert decide("alice@example.com", "alice@example.com", failed) == "authentication_failed"
    assert decide("alice@example.com", "alice@example.com", {"auto-submitted": "auto-replied"}) == "auto_reply"
    assert decide("alice@example.com", "alice@example.com", {"auto-submitted": "no"}) is None
    assert is_automatic({"precedence": "bulk"}) and is_automatic({"list-id": "<x>"})


def _repair(kind: str, status: str, at: datetime, target: str = "instance:a", reason: str | None = None,
            instance: str | None = "a") -> RepairRecord:
    level = 1 if kind in ("edge_republish", "clear_stale_operation_lock") else 2
    return RepairRecord(str(uuid4()), kind, level, target, instance, status, reason, "dry-run", at)


def test_soak_report_counts_what_live_mode_would_have_done() -> None:
    t0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
    repairs = [
        _repair("edge_republish", "proposed", t0),
        _repair("edge_republish", "skipped", t0 + timedelta(minutes=5), reason="resolved"),
        _repair("edge_republish", "skipped", t0 + timedelta(minutes=6), target="instance:b", instance="b",
                reason="billing_suspended"),
        _repair("restart_instance", "proposed", t0, target="instance:c", instance="c"),
        _repair("clear_stale_operation_lock", "skipped", t0 + timedelta(minutes=1), reason="resolved"),
    ]
    report = soak_report(repairs, {}, t0 - timedelta(days=7), t0 + timedelta(days=1), "dry-run",
                         {"instance:a": 4, "instance:c": 1})
    kinds = {k["kind"]: k for k in report["kinds"]}
    assert (kinds["edge_republish"]["proposed"], kinds["edge_republish"]["would_run"]) == (3, 2)
    assert kinds["edge_republish"]["skipped"] == {"resolved": 1, "billing_suspended": 1}
    assert kinds["restart_instance"]["would_run"] == 0 and not kinds["restart_instance"]["executable"]
    assert kinds["clear_stale_operation_lock"]["would_run"] == 1
    assert report["targets"][0]["target"] == "instance:a" and report["targets"][0]["drift_changes"] == 4
    assert report["verdict"] == ("3 Level 1 repairs would have run; none touched a suspended server "
                                 "(1 held back by the billing guard)")


def test_soak_report_escalates_past_the_hourly_limit_and_names_a_suspended_target() -> None:
    t0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
    repairs = [_repair("edge_republish", "skipped", t0 + timedelta(minutes=10 * n), reason="resolved")
               for n in range(5)]
    report = soak_report(repairs, {}, t0, t0 + timedelta(hours=2), "dry-run")
    edge = next(k for k in report["kinds"] if k["kind"] == "edge_republish")
    assert (edge["would_run"], edge["would_escalate"]) == (3, 2)
    suspended = {"a": [(t0 + timedelta(minutes=15), None)]}
    report = soak_report(repairs, suspended, t0, t0 + timedelta(hours=2), "dry-run")
    assert len(report["touched_suspended"]) == 1  # the third (at 12:20) ran while suspended; 4 and 5 escalate
    assert report["verdict"].startswith("3 Level 1 repairs would have run; 1 of them would have touched")


def test_ticket_email_carries_the_tickets_reply_to() -> None:
    from services.adapters.smtp import SmtpEmailChannel
    from services.notification_ports import Email

    channel = SmtpEmailChannel(None)
    msg = channel.build_message(Email(to="alice@example.com", subject="[ZLH-20260302-0001] New reply", body="hi",
                                      reply_to=reply_address("ZLH-20260302-0001", "zlh.example")), "key")
    assert msg["Reply-To"] == "support+ZLH-20260302-0001@zlh.example"
    assert channel.build_message(Email(to="a@example.com", subject="s", body="b"), "k")["Reply-To"] is None
