"""Parts shared by PKIData and PKIResponse (RFC 5272 §3.2.1, §3.3.1): the control sequence
with its lookups, cmsSequence and otherMsgSequence items, and body part numbering."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from asn1crypto import core

from cmc.asn1 import types as asn1
from cmc.asn1.controls import control_from_asn1, control_to_asn1
from cmc.asn1.der import decoding, integer, reencode
from cmc.asn1.values import Control, StatusInfo
from cmc.errors import MalformedMessage

#: RFC 5272 §3.2.1: bodyPartIDs range over 0..4294967295; 0 refers to the message itself.
BODY_PART_ID_MAX = 4294967295


@dataclass(frozen=True)
class TaggedContentInfo:
    """RFC 5272 §3.2.1.4: a nested CMS content (e.g. a PKIData signed by another party)."""

    body_part_id: int
    content_type: str
    der: bytes


@dataclass(frozen=True)
class OtherMsg:
    """RFC 5272 §3.2.1.5: a message type outside CMC, kept as DER."""

    body_part_id: int
    msg_type: str
    value_der: bytes


class ControlLookup:
    """Lookups over ``self.controls`` shared by PKIData and PKIResponse (RFC 5272 §6)."""

    controls: tuple[Control, ...]

    def find(self, name: str) -> tuple[Control, ...]:
        """Controls by RFC name (``"senderNonce"``) or dotted OID, in message order."""
        oid = asn1.CONTROL_OIDS.get(name, name)
        return tuple(item for item in self.controls if item.oid == oid)

    def single_value(self, name: str) -> Any:
        """The value of a control that may occur at most once (RFC 5272 §6.6, §6.7)."""
        found = self.find(name)
        if not found:
            return None
        if len(found) > 1:
            raise MalformedMessage(f"{name} occurs {len(found)} times")
        return found[0].value

    @property
    def transaction_id(self) -> int | None:
        value = self.single_value("transactionId")
        return None if value is None else int(value)

    @property
    def sender_nonce(self) -> bytes | None:
        value = self.single_value("senderNonce")
        return None if value is None else bytes(value)

    @property
    def recipient_nonce(self) -> bytes | None:
        value = self.single_value("recipientNonce")
        return None if value is None else bytes(value)

    @property
    def statuses(self) -> tuple[StatusInfo, ...]:
        """statusInfoV2 and statusInfo values (RFC 5272 §6.1), in message order."""
        wanted = {asn1.CONTROL_OIDS["statusInfoV2"], asn1.CONTROL_OIDS["statusInfo"]}
        return tuple(
            value
            for item in self.controls
            if item.oid in wanted
            for value in item.values
            if isinstance(value, StatusInfo)
        )

    @property
    def unrecognised_controls(self) -> tuple[Control, ...]:
        """Controls whose OID this library does not know (kept as raw values)."""
        return tuple(item for item in self.controls if not item.recognised)


def decode_controls(sequence: Any) -> tuple[Control, ...]:
    return tuple(control_from_asn1(item) for item in sequence)


def decode_cms_sequence(sequence: Any) -> tuple[TaggedContentInfo, ...]:
    with decoding("cmsSequence"):
        return tuple(
            TaggedContentInfo(
                integer(item["body_part_id"]),
                item["content_info"]["content_type"].dotted,
                reencode(item["content_info"]),
            )
            for item in sequence
        )


def decode_other_msgs(sequence: Any) -> tuple[OtherMsg, ...]:
    with decoding("otherMsgSequence"):
        return tuple(
            OtherMsg(
                integer(item["body_part_id"]),
                item["other_msg_type"].dotted,
                reencode(item["other_msg_value"]),
            )
            for item in sequence
        )


def encode_cms_sequence(items: Iterable[TaggedContentInfo]) -> list[asn1.TaggedContentInfo]:
    return [
        asn1.TaggedContentInfo.load(
            asn1.RawTaggedContentInfo(
                {"body_part_id": item.body_part_id, "content_info": core.Any.load(item.der)}
            ).dump()
        )
        for item in items
    ]


def encode_other_msgs(items: Iterable[OtherMsg]) -> list[asn1.OtherMsg]:
    return [
        asn1.OtherMsg(
            {
                "body_part_id": item.body_part_id,
                "other_msg_type": item.msg_type,
                "other_msg_value": core.Any.load(item.value_der),
            }
        )
        for item in items
    ]


def encode_controls(controls: Iterable[Control]) -> list[asn1.TaggedAttribute]:
    return [control_to_asn1(item) for item in controls]


def check_body_part_ids(ids: Sequence[int]) -> None:
    """RFC 5272 §3.2.1: body part IDs are unique within one PKIData / PKIResponse."""
    for value in ids:
        if not 0 < value <= BODY_PART_ID_MAX:
            raise ValueError(f"body part ID {value} is outside 1..{BODY_PART_ID_MAX}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"body part IDs are not unique: {sorted(ids)}")


def number_controls(controls: Sequence[Control], taken: Iterable[int]) -> tuple[Control, ...]:
    """Give every control with body part ID 0 the next free ID after ``taken``."""
    used = set(taken) | {item.body_part_id for item in controls}
    next_id = max(used, default=0) + 1
    out = []
    for item in controls:
        if item.body_part_id == 0:
            item = replace(item, body_part_id=next_id)
            next_id += 1
        out.append(item)
    return tuple(out)
