"""The RA's mail texts: one :class:`string.Template` subject and body per kind, plain text.

``mutable`` says whether a user's mute (manual 3.8.1) silences the kind: notifications about
orders and expiries are, but mails that are a step of a process the recipient started (the
email challenge, the PKCS#12 PIN and pick-up link, the request for a renewal CSR) always go
out — muting them would strand the order.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

from config.errors import CmcgateError


class TemplateError(CmcgateError):
    """An unknown kind or a field missing for it."""

    status = 400


@dataclass(frozen=True)
class MailTemplate:
    subject: str
    body: str
    fields: tuple[str, ...]
    mutable: bool
    #: fields never stored: the notifications table keeps the text with these withheld
    secret: tuple[str, ...] = ()


WITHHELD = "[withheld]"
_SIGNATURE = "\n-- \nThis message was sent automatically by the certificate authority.\n"

TEMPLATES: dict[str, MailTemplate] = {
    "order_confirmation": MailTemplate(
        "Certificate order $order_id: $status",
        "Your certificate order $order_id for the product $product is $status.\n\n"
        "Order:    $order_id\nProduct:  $product\nAddresses: $emails\nStatus:   $status\n",
        ("order_id", "product", "emails", "status"),
        mutable=True,
    ),
    "email_challenge": MailTemplate(
        "Confirm your mailbox for certificate order $order_id",
        "A certificate for $email was requested (order $order_id).\n\n"
        "To confirm that you control this mailbox, open\n\n    $url\n\n"
        "and enter this code:\n\n    $code\n\n"
        "The code is valid until $expires. If you did not expect this message, ignore it:\n"
        "no certificate is issued without the code.\n",
        ("order_id", "email", "code", "url", "expires"),
        mutable=False,
        secret=("code",),
    ),
    "p12_pin": MailTemplate(
        "PIN for your certificate (order $order_id)",
        "The PIN that protects the PKCS#12 file of your certificate (order $order_id) is:\n\n"
        "    $pin\n\n"
        "The file itself is delivered separately. Keep this PIN secret.\n",
        ("order_id", "pin"),
        mutable=False,
        secret=("pin",),
    ),
    "p12_pickup": MailTemplate(
        "Your certificate is ready for download (order $order_id)",
        "Your certificate and its private key (order $order_id) are ready as a PKCS#12 file:\n\n"
        "    $url\n\n"
        "The file can be downloaded until $expires; the PIN that opens it comes in a\n"
        "separate message.\n",
        ("order_id", "url", "expires"),
        mutable=False,
        secret=("url",),  # the link carries the one-time token, stored only as its SHA-256
    ),
    "expiry_warning": MailTemplate(
        "Certificate $serial expires in $days days",
        "The certificate\n\n    Subject: $subject\n    Serial:  $serial\n\n"
        "expires on $not_after (in $days days). Please renew it before that date.\n",
        ("serial", "subject", "not_after", "days"),
        mutable=True,
    ),
    "renewal_csr_needed": MailTemplate(
        "Renewal of certificate $serial: a new request is needed (order $order_id)",
        "The renewal order $order_id for certificate $serial waits for a new certificate\n"
        "signing request (CSR). Submit it here:\n\n    $url\n",
        ("order_id", "serial", "url"),
        mutable=False,
    ),
}


def template(kind: str) -> MailTemplate:
    found = TEMPLATES.get(kind)
    if found is None:
        raise TemplateError(
            f"unknown notification kind {kind!r} (known: {', '.join(sorted(TEMPLATES))})"
        )
    return found


def render(kind: str, fields: Mapping[str, object], *, redact: bool = False) -> tuple[str, str]:
    """(subject, body) of ``kind`` with ``fields``; TemplateError when one is missing.

    Values are inserted as text (tuples and lists joined with ", "); a line break in a
    value cannot reach the subject (it would start a new header). ``redact``: the kind's
    secret fields (a challenge code, a PIN) are replaced by ``[withheld]`` — the text kept
    in the database."""
    chosen = template(kind)
    missing = [f for f in chosen.fields if f not in fields]
    if missing:
        raise TemplateError(f"notification {kind}: missing field(s) {', '.join(missing)}")
    values = {k: _text(v) for k, v in fields.items()}
    if redact:
        values.update({name: WITHHELD for name in chosen.secret})
    subject = string.Template(chosen.subject).safe_substitute(values)
    subject = " ".join(subject.split())
    body = string.Template(chosen.body).safe_substitute(values) + _SIGNATURE
    return subject, body


def _text(value: object) -> str:
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(v) for v in value)
    return str(value)
