"""Customer email over SMTP: one attempt per `send`, its outcome classified.

`ZLH_SMTP_URL` is `smtp://[user:pass@]host[:port]` (plain SMTP, port 25 by default;
with credentials, STARTTLS is used first when the server offers it) or
`smtps://[user:pass@]host[:port]` (implicit TLS, port 465 by default). User and
password may be percent-encoded. Unset or empty: every send is `not_configured`.

Classification of one attempt:
- accepted by the server: `sent`;
- connection refused, timeout, other network errors, the server hanging up, any SMTP
  4xx reply: `transient`;
- any SMTP 5xx reply (recipient or sender refused, authentication failed, message
  rejected), an address or header that cannot be put in a message, a TLS certificate
  that does not verify: `permanent`.

The Message-ID is derived from the dedupe key, so a resend after a crash carries the
same Message-ID as the first attempt and mail systems and people can tell it is one message.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from urllib.parse import unquote, urlsplit

from services.notification_ports import Email, EmailChannel, Outcome

DEFAULT_SENDER = "ZLH Support <support@zlh.localhost>"
DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
MESSAGE_ID_DOMAIN = "zlh.localhost"


def message_id(dedupe_key: str, domain: str = MESSAGE_ID_DOMAIN) -> str:
    """`<HASH@domain>`, the same for every attempt of one logical message."""
    digest = hashlib.sha256(dedupe_key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def _one_line(text: str) -> str:
    """Header values may not contain line breaks: fold any whitespace run into one space."""
    return " ".join(text.split())


class SmtpEmailChannel(EmailChannel):
    """`EmailChannel` over `smtplib`; a fresh connection per attempt."""

    def __init__(self, url: str | None, sender: str = DEFAULT_SENDER, timeout: float = 10.0, *,
                 local_hostname: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        """Raise `ValueError` for a URL that is set but not a usable `smtp://` or `smtps://` URL.

        `local_hostname` is the name given in EHLO (default: this machine's FQDN);
        `ssl_context` is for `smtps://` and STARTTLS (default: the system's trust store).
        """
        self.sender = sender
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.ssl_context = ssl_context
        self.configured = bool(url and url.strip())
        self.scheme, self.host, self.port = "smtp", "", 0
        self.username: str | None = None
        self.password: str | None = None
        sender_address = parseaddr(sender)[1]
        if "@" not in sender_address:
            raise ValueError(f"sender has no email address: {sender!r}")
        self.envelope_from = sender_address
        self.message_id_domain = sender_address.rpartition("@")[2] or MESSAGE_ID_DOMAIN
        if not self.configured:
            return
        assert url is not None
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"ZLH_SMTP_URL must start with smtp:// or smtps://, not {scheme or 'nothing'}://")
        try:
            port = parts.port
        except ValueError as exc:  # the message names the bad port, not the URL's secrets
            raise ValueError(f"ZLH_SMTP_URL has a bad port: {exc}") from None
        if not parts.hostname:
            raise ValueError("ZLH_SMTP_URL has no host")
        self.scheme = scheme
        self.host = parts.hostname
        self.port = port or DEFAULT_PORTS[scheme]
        if parts.username is not None:
            self.username = unquote(parts.username)
            self.password = unquote(parts.password or "")

    @property
    def server(self) -> str:
        """`host:port`, for details and logs (no credentials)."""
        return f"{self.host}:{self.port}"

    def build_message(self, email: Email, dedupe_key: str, now: datetime | None = None) -> EmailMessage:
        """The message as it goes on the wire. Raises `ValueError` for an unusable address or header."""
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = Address(addr_spec=_one_line(email.to))
        msg["Subject"] = _one_line(email.subject)
        if email.reply_to:
            msg["Reply-To"] = Address(addr_spec=_one_line(email.reply_to))
        msg["Date"] = format_datetime(now or datetime.now(UTC))
        msg["Message-ID"] = message_id(dedupe_key, self.message_id_domain)
        msg["X-ZLH-Dedupe-Key"] = _one_line(dedupe_key)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(email.body)  # text/plain; utf-8, quoted-printable or 7bit as needed
        return msg

    def send(self, email: Email, dedupe_key: str) -> Outcome:
        """One attempt; never raises for delivery problems."""
        if not self.configured:
            return Outcome("not_configured", "ZLH_SMTP_URL is not set")
        try:
            msg = self.build_message(email, dedupe_key)
        except (ValueError, TypeError, IndexError) as exc:
            return Outcome("permanent", self._scrub(f"cannot build the message: {exc}"))
        try:
            client = self._connect()
        except Exception as exc:
            return self._classify(exc, "connect")
        stage = "login"
        try:
            try:
                if self.username is not None:
                    self._login(client)
                stage = "send"
                client.send_message(msg, from_addr=self.envelope_from, to_addrs=[email.to.strip()])
            except Exception as exc:
                return self._classify(exc, stage)
            return Outcome("sent", f"accepted by {self.server} as {msg['Message-ID']}")
        finally:
            # The message is delivered (or not) by now: a failing QUIT must not change the outcome.
            try:
                client.quit()
            except Exception:
                client.close()

    def _connect(self) -> smtplib.SMTP:
        if self.scheme == "smtps":
            return smtplib.SMTP_SSL(self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout,
                                    context=self.ssl_context or ssl.create_default_context())
        return smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout)

    def _login(self, client: smtplib.SMTP) -> None:
        client.ehlo_or_helo_if_needed()
        if self.scheme == "smtp" and client.has_extn("starttls"):
            client.starttls(context=self.ssl_context or ssl.create_default_context())
            client.ehlo()
        client.login(self.username or "", self.password or "")

    def _classify(self, exc: BaseException, stage: str) -> Outcome:
        where = f"{stage} {self.server}"
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            replies = list(exc.recipients.values())
            code, text = replies[0] if replies else (0, b"recipient refused")
            return self._by_code(code, f"{where}: recipient refused: {code} {_text(text)}")
        if isinstance(exc, smtplib.SMTPResponseException):  # sender refused, data refused, auth failed, HELO...
            reply = f"{exc.smtp_code} {_text(exc.smtp_error)}"
            return self._by_code(exc.smtp_code, f"{where}: {type(exc).__name__}: {reply}")
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return Outcome("transient", self._scrub(f"{where}: server disconnected: {exc}"))
        if isinstance(exc, smtplib.SMTPNotSupportedError):  # e.g. no AUTH, no SMTPUTF8 for a non-ASCII address
            return Outcome("permanent", self._scrub(f"{where}: not supported by the server: {exc}"))
        if isinstance(exc, ssl.SSLCertVerificationError):
            return Outcome("permanent", self._scrub(f"{where}: TLS certificate rejected: {exc.verify_message}"))
        if isinstance(exc, TimeoutError):
            return Outcome("transient", f"{where}: timed out after {self.timeout:g}s")
        if isinstance(exc, ConnectionRefusedError):
            return Outcome("transient", f"{where}: connection refused")
        if isinstance(exc, OSError | smtplib.SMTPException):  # resets, DNS failures, TLS hiccups, odd replies
            return Outcome("transient", self._scrub(f"{where}: {type(exc).__name__}: {exc}"))
        if isinstance(exc, ValueError | UnicodeError):  # e.g. a header smtplib cannot encode
            return Outcome("permanent", self._scrub(f"{where}: {type(exc).__name__}: {exc}"))
        return Outcome("transient", self._scrub(f"{where}: unexpected {type(exc).__name__}: {exc}"))

    def _by_code(self, code: int, detail: str) -> Outcome:
        """SMTP reply codes: 4xx is a temporary failure, 5xx a permanent one (RFC 5321 §4.2.1)."""
        status = "permanent" if 500 <= code <= 599 else "transient"
        return Outcome(status, self._scrub(detail))

    def _scrub(self, detail: str) -> str:
        """Short, one line, and never the password (servers sometimes echo what they got)."""
        if self.password:
            detail = detail.replace(self.password, "***")
        detail = _one_line(detail)
        return detail if len(detail) <= 300 else detail[:299] + "…"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
