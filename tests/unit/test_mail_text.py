"""The reply trimmer and the HTML-to-text of inbound support mail (domain/mail_text.py)."""

from __future__ import annotations

import pytest

from domain.mail_text import html_to_text, trim_reply

GMAIL = """Thanks, that fixed it!

On Mon, 2 Mar 2026 at 10:15, ZLH Support <support+ZLH-20260302-0001@zlh.example> wrote:
> Hello,
>
> please restart the server.
"""

GMAIL_WRAPPED = """Still lagging after the restart.

On Mon, Mar 2, 2026 at 10:15 AM ZLH Support <support+ZLH-20260302-0001@zlh.example>
wrote:

> Hello,
> please restart the server.
"""

OUTLOOK = """Here is the log you asked for.

________________________________
From: ZLH Support <support@zlh.example>
Sent: Monday, March 2, 2026 10:15 AM
To: Alice <alice@example.com>
Subject: [ZLH-20260302-0001] New reply: Lag

Hello, could you send the log?
"""

OUTLOOK_NO_RULE = """Done.

From: ZLH Support <support@zlh.example>
Date: Monday, 2 March 2026 at 10:15
To: Alice <alice@example.com>
Subject: Re: Lag
"""

SIGNATURE = """It works now, thank you.

--
Alice Example
Example Corp, +1 555 0100
"""

INLINE = """> Which version do you run?
1.21.4
> Did you install plugins?
No plugins.
"""


@pytest.mark.parametrize(("text", "expected"), [
    (GMAIL, "Thanks, that fixed it!"),
    (GMAIL_WRAPPED, "Still lagging after the restart."),
    (OUTLOOK, "Here is the log you asked for."),
    (OUTLOOK_NO_RULE, "Done."),
    (SIGNATURE, "It works now, thank you."),
    ("Sure.\n\n-----Original Message-----\nFrom: x\n", "Sure."),
    ("Ok\n\nSent from my iPhone\n", "Ok"),
    ("Le lun. 2 mars 2026 à 10:15, Support <s@x> a écrit :\n> vieux", "Le lun. 2 mars 2026 à 10:15, Support <s@x> "
     "a écrit :\n> vieux"),  # nothing but quote: the whole text is kept
    ("Merci !\n\nLe lun. 2 mars 2026 à 10:15, Support <s@x> a écrit :\n> vieux", "Merci !"),
    (INLINE, "1.21.4\nNo plugins."),
    ("First line\r\nsecond line\r\n", "First line\nsecond line"),
])
def test_trim_reply_keeps_what_the_sender_wrote(text: str, expected: str) -> None:
    assert trim_reply(text) == expected


def test_a_sentence_starting_with_on_is_not_an_attribution() -> None:
    text = "On Monday the server crashed twice.\nIt happens when players join."
    assert trim_reply(text) == text


def test_a_dash_line_in_the_middle_of_a_sentence_is_not_a_signature() -> None:
    text = "Steps:\n-- not a signature, I said -- really\nthanks"
    assert trim_reply(text) == text


def test_never_empty_unless_the_text_is() -> None:
    assert trim_reply("> only quoted\n> lines") == "> only quoted\n> lines"
    assert trim_reply("") == ""


def test_html_to_text_keeps_blocks_and_marks_quotes() -> None:
    html = ("<html><head><style>p{color:red}</style></head><body><p>Thanks &amp; bye</p><div>Line<br>two</div>"
            "<blockquote><p>On Mon, x wrote:</p><p>old text</p></blockquote></body></html>")
    text = html_to_text(html)
    assert text.splitlines()[0] == "Thanks & bye"
    assert "Line\ntwo" in text and "> old text" in text and "color" not in text
    assert trim_reply(text) == "Thanks & bye\n\nLine\ntwo"
