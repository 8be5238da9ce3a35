"""The display name an outgoing message's From header gives its sender (RFC 5322 §3.4).

A SwissSign Gold certificate's CN is the user's name (reference 000: "The CN attribute (only
for SwissSign Gold) ... [is] replaced with information that corresponds to the requesting
user"); the gateway learns that name from the From header of the user's first message.

:func:`display_name` reads only the header block (up to the first empty line, at most
:data:`MAX_HEADER` bytes), decodes RFC 2047 encoded-words (``=?UTF-8?Q?J=C3=BCrg?=``) and raw
UTF-8 (RFC 6532), and returns the display name of the From mailbox whose address *is* the
envelope sender — a name given to another address (``From: Boss <boss@...>`` sent by an
assistant) is never taken for the sender's.  Anything unreadable gives None, never an error:
the caller then decides as for a From without a display name.
"""

from __future__ import annotations

import email.parser
import email.policy
import re

#: Header blocks longer than this are not searched for a From field.
MAX_HEADER = 256 * 1024
_END_OF_HEADER = re.compile(rb"\r?\n\r?\n")
_SURROGATE = re.compile("[\ud800-\udfff]")


def header_block(content: bytes) -> bytes:
    """The header fields of ``content`` (without the empty line that ends them)."""
    head = content[:MAX_HEADER]
    end = _END_OF_HEADER.search(head)
    return head[: end.start()] + b"\r\n" if end else head


def display_name(content: bytes, sender: str) -> str | None:
    """The From header's display name for ``sender`` (decoded, blanks collapsed), or None."""
    wanted = sender.strip().lower()
    if not wanted:
        return None
    # Raw UTF-8 is decoded; other 8-bit bytes become surrogates, and a name holding one is
    # not taken (its charset is unknown).
    text = header_block(content).decode("utf-8", "surrogateescape")
    try:
        fields = email.parser.HeaderParser(policy=email.policy.default).parsestr(text)
        for value in fields.get_all("From") or []:
            for mailbox in getattr(value, "addresses", ()):
                if str(mailbox.addr_spec).strip().lower() != wanted:
                    continue
                name = " ".join(str(mailbox.display_name or "").split())
                if _SURROGATE.search(name):
                    return None
                return name or None
    except Exception:  # noqa: BLE001 - a header the parser chokes on has no usable name
        return None
    return None
