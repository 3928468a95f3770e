"""The new part of an emailed reply: quoted history and signatures trimmed off, and HTML made text.

`trim_reply` keeps what the customer wrote above the first of these (the common forms):

- an attribution line: `On Mon, 3 Mar 2026 at 10:00, ZLH Support <support@…> wrote:` (also
  wrapped over two lines, as Gmail and Apple Mail do, and `Le … a écrit :` / `Am … schrieb …:`);
- Outlook's header block: `From: …` followed within a few lines by `Sent: …` or `Date: …`
  (with or without the `________________________________` rule above it), or
  `-----Original Message-----`;
- a signature separator: `-- ` (RFC 3676; also a bare `--`), or a mobile footer
  (`Sent from my iPhone`, `Get Outlook for Android`, …).

Lines quoted with `>` are dropped wherever they are (an inline answer keeps the customer's
own lines). If nothing is left (the reply was all quote), the whole text is kept: the trimmer
never turns a message into nothing. Pure: standard library only.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_ATTRIBUTION = re.compile(r"^\s*(On|Le|Am|El|Il|Op)\s.+(wrote|a écrit|schrieb|escribió|ha scritto|schreef)\s*:\s*$",
                          re.IGNORECASE)
_ATTRIBUTION_START = re.compile(r"^\s*(On|Le|Am|El|Il|Op)\s.{4,}$", re.IGNORECASE)
_ATTRIBUTION_END = re.compile(r"^.*(wrote|a écrit|schrieb|escribió|ha scritto|schreef)\s*:\s*$", re.IGNORECASE)
_ORIGINAL = re.compile(r"^\s*-{2,}\s*(Original Message|Forwarded message|Ursprüngliche Nachricht|Message d'origine)"
                       r"\s*-{2,}\s*$", re.IGNORECASE)
_RULE = re.compile(r"^\s*_{10,}\s*$")
_HEADER_FROM = re.compile(r"^\s*\*?(From|Von|De)\s*:\*?\s", re.IGNORECASE)
_HEADER_SENT = re.compile(r"^\s*\*?(Sent|Date|Gesendet|Envoyé)\s*:\*?\s", re.IGNORECASE)
_SIGNATURE = re.compile(r"^--\s?$")
_MOBILE = re.compile(r"^\s*(Sent from my \w+|Sent from (Mail|Outlook|Yahoo Mail) for \w+|Get Outlook for \w+|"
                     r"Envoyé de mon \w+|Von meinem \w+ gesendet)", re.IGNORECASE)


def _cut_at(lines: list[str]) -> int:
    """The index of the first line of quoted history or signature (len(lines) when there is none)."""
    for i, line in enumerate(lines):
        if _ATTRIBUTION.match(line) or _ORIGINAL.match(line) or _SIGNATURE.match(line) or _MOBILE.match(line):
            return i
        if _ATTRIBUTION_START.match(line) and i + 1 < len(lines) and _ATTRIBUTION_END.match(lines[i + 1]) \
                and not lines[i + 1].lstrip().startswith(">"):
            return i
        if _HEADER_FROM.match(line) and any(_HEADER_SENT.match(x) for x in lines[i + 1:i + 5]):
            return i - 1 if i > 0 and _RULE.match(lines[i - 1]) else i
        if _RULE.match(line) and i + 1 < len(lines) and _HEADER_FROM.match(lines[i + 1]):
            return i
    return len(lines)


def trim_reply(text: str) -> str:
    """What the sender wrote, without quoted history or signature; never empty unless `text` is."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept = [line for line in lines[:_cut_at(lines)] if not line.lstrip().startswith(">")]
    trimmed = "\n".join(line.rstrip() for line in kept).strip("\n")
    trimmed = re.sub(r"\n{3,}", "\n\n", trimmed).strip()
    return trimmed if trimmed else text.strip()


class _TextExtractor(HTMLParser):
    BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "hr", "pre"})
    SKIP = frozenset({"style", "script", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.quoted = False
        self.quote = 0
        self.skip = 0

    def line_break(self) -> None:
        text = "".join(self.current).strip()
        self.lines.append(f"> {text}" if self.quoted and text else text)
        self.current, self.quoted = [], False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip += 1
        elif tag == "blockquote":
            self.line_break()
            self.quote += 1
        elif tag in self.BLOCKS:
            self.line_break()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "blockquote":
            self.line_break()
            self.quote = max(0, self.quote - 1)
        elif tag in self.BLOCKS:
            self.line_break()

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        text = re.sub(r"[ \t\r\n]+", " ", data)
        if text.strip() and self.quote:
            self.quoted = True
        self.current.append(text)


def html_to_text(html: str) -> str:
    """Readable text from an HTML mail body: blocks become lines, `<blockquote>` becomes `> ` quoting."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    parser.line_break()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(parser.lines)).strip()
