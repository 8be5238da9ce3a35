"""The gateway pipeline: policy, S/MIME and DKIM applied to one message, copy by copy.

Recipients in an internal domain get the *inbound* treatment, every other recipient the
*outbound* one; a message to both is split into separate copies (GatewayHandler sends each
as its own transaction).  Each copy's ``actions`` start with its direction.

Outbound (per recipient: :func:`gateway.policy.decide`, then one copy per (sign, encrypt)
group): sign with the sender's key, encrypt to the group's certificates plus the sender's own
encryption certificate (so the sent copy stays readable), sign-then-encrypt when both, DKIM
last when a key is configured for the envelope sender's domain.  Mail the client already
signed is not signed again; mail it already encrypted (its body parses as CMS EnvelopedData
or AuthEnvelopedData; a Content-Type header saying so is not enough) is passed on as it is
(``client-encrypted``).  Only the sender's own key signs: signing needs an internal sender.
RSA recipients get the content key by key transport, EC recipients by ECDH (RFC 5753);
certificates with other keys count as "no certificate".  Content cipher, RSA key transport
and clear vs opaque signing are :class:`PipelineSettings` (``cmcgate.smime.*``).  The sender's
identity is asked for with the From header's display name for the envelope sender
(:mod:`gateway.from_header`): a sender enrolled on this message gets it as a Gold CN.

One message, one DATA reply (RFC 5321 has no per-recipient reply after DATA), so a
recipient's outcome decides for the whole message: any ``tempfail`` → ``451 4.7.1`` (retrying
may help, and a temporary failure must stay temporary), else any ``reject`` →
``550 5.7.1``; nothing is sent or held then.  ``hold`` recipients are written to the
:class:`~gateway.quarantine.Quarantine` (durable before the reply) and get a copy with the
action ``hold`` that :class:`gateway.smtp.server.GatewayHandler` does not relay; the others are
relayed.
If relaying fails after the hold, the client retries and the message may be held twice —
a duplicate rather than a loss.  Never plaintext to a mandatory recipient:
:func:`check_no_plaintext` refuses (451) any copy for one whose body is not encrypted CMS.

Inbound (one copy per internal recipient, each has its own key): enveloped mail (DER or BER
EnvelopedData, or AES-GCM AuthEnvelopedData; RSA or EC keys) is decrypted with the first of
the recipient's keys that opens it (none does, or no key: delivered as it is,
``not-decrypted``, with the reason logged: no key for the recipients named in the message,
an unsupported algorithm, a failed decryption); signed mail is verified and stamped
``X-Cmcgate-Signature`` (any such field from outside is removed first, also on unsigned
mail); opaque signed-data is unwrapped
to its content, clear-signed mail kept as is; of a valid signature the signer's certificate
and the CA certificates of its path that came along are harvested — never other end-entity
or CA certificates (best effort: a failing harvest is logged, the mail still delivered).

CPU-heavy work — signing, encrypting, verifying (certificate path search included),
decrypting, DKIM — runs in an executor (``executor``; the event loop's default one unless
given), never on the SMTP front's event loop: while one message is being checked, every
other session keeps being served.

Failures: anything temporary — :class:`cmc.errors.TemporaryFailure` from a lookup (LDAP,
CMC), a key backend/HSM error, a signing failure, a quarantine write — refuses the message
with 451 (the client keeps it).  A malformed message: outbound, if a copy must be signed or
encrypted, ``554 5.6.0`` (retrying cannot help; sending it unprotected is not an option);
a copy that needs no transform is relayed as it is.  Inbound, it is delivered as it is with
spoofed verdict fields removed line by line (action ``malformed``): never dropped, never a
crash.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509

from ca.keys import KeyBackendError, UnsupportedKeyOperation
from cmc.errors import TemporaryFailure
from config.smime import ContentCipher, RsaKeyTransport
from gateway import dkim, from_header, smime
from gateway.certs.view import Certificates, SigningIdentity
from gateway.policy import Decision, EncryptMode, Outcome, Policy, SignMode, decide, group
from gateway.quarantine import Quarantine, QuarantineError
from gateway.smime import mime
from gateway.smime.recipients import check_recipient
from gateway.smtp.message import HELD, Copy, MessageRefused, Transaction
from gateway.smtp.relay import Reply

log = logging.getLogger("cmcgate.gateway.pipeline")

HOLD = HELD
T = TypeVar("T")
#: outbound transforms of messages up to this size run on the event loop (see _outbound_work)
INLINE_BYTES = 64 * 1024
#: ``is_revoked(cert, issuer)``: True revoked, False good, None unknown
IsRevoked = Callable[[x509.Certificate, x509.Certificate], bool | None]
_SPOOF = re.compile(rb"(?im)^x-cmcgate-signature[ \t]*:.*(?:\r?\n[ \t].*)*\r?\n")


@dataclass(frozen=True)
class PipelineSettings:
    internal_domains: tuple[str, ...]
    policy: Policy = Policy()
    #: DKIM keys; the one whose domain is the envelope sender's (or a parent of it) signs.
    dkim_keys: tuple[dkim.DkimKey, ...] = ()
    trust_anchors: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()
    encrypt_to_sender: bool = True
    protect_headers: bool = False
    #: ``cmcgate.smime.contentCipher``: AES-CBC in EnvelopedData, AES-GCM in AuthEnvelopedData
    content_cipher: ContentCipher = ContentCipher.AES256_CBC
    #: ``cmcgate.smime.rsaKeyTransport``: PKCS#1 v1.5 or RSAES-OAEP (SHA-256)
    rsa_transport: RsaKeyTransport = RsaKeyTransport.PKCS1V15
    #: ``cmcgate.smime.signatureFormat``: multipart/signed (True) or opaque signed-data
    detached_signature: bool = True

    def is_internal(self, address: str) -> bool:
        return _in_domains(address, self.internal_domains)

    def dkim_key(self, sender: str) -> dkim.DkimKey | None:
        for key in sorted(self.dkim_keys, key=lambda k: -len(k.domain)):
            if _in_domains(sender, (key.domain,)):
                return key
        return None


def _in_domains(address: str, domains: Sequence[str]) -> bool:
    domain = address.rpartition("@")[2].lower().rstrip(".")
    return any(domain == d.lower() or domain.endswith("." + d.lower()) for d in domains)


def _reply(code: int, status: str, text: object) -> MessageRefused:
    line = " ".join(str(text).split())[:300]
    return MessageRefused(Reply(code, f"{status} {line}"))


class SmimePipeline:
    """The gateway's :data:`~gateway.smtp.server.Pipeline`: ``await pipeline(transaction)``."""

    def __init__(
        self,
        settings: PipelineSettings,
        certificates: Certificates,
        quarantine: Quarantine | None = None,
        *,
        executor: Executor | None = None,
        is_revoked: IsRevoked | None = None,
    ) -> None:
        self.settings = settings
        self.certificates = certificates
        self.quarantine = quarantine
        self.executor = executor
        #: CRL check of inbound signers (gateway.certs.revocation_policy); may block, like all
        #: verification it runs in the executor
        self.is_revoked = is_revoked

    async def _offload(self, func: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        """``func(*args, **kwargs)`` in the executor, off the event loop."""
        call = functools.partial(func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    async def _outbound_work(
        self, size: int, func: Callable[..., T], /, *args: object, **kwargs: object
    ) -> T:
        """Our own transforms of a message of ``size`` bytes: inline when small (about a
        millisecond; a thread hop would cost more than it saves), in the executor when large.
        Inbound work on what others made (verify, decrypt) always goes to the executor."""
        if size <= INLINE_BYTES:
            return func(*args, **kwargs)
        return await self._offload(func, *args, **kwargs)

    async def __call__(self, transaction: Transaction) -> list[Copy]:
        try:
            return await self._run(transaction)
        except TemporaryFailure as exc:
            # Details go to the log only: reply texts may end up in bounces to outsiders.
            log.warning("queue_id=%s temporary failure: %s", transaction.queue_id, exc)
            raise _reply(451, "4.4.3", "certificate lookup failed, try again later") from exc
        except (KeyBackendError, smime.SigningFailed) as exc:
            log.error("queue_id=%s key trouble: %s", transaction.queue_id, exc)
            raise _reply(451, "4.7.0", "key or HSM unavailable, try again later") from exc
        except QuarantineError as exc:
            log.error("queue_id=%s quarantine: %s", transaction.queue_id, exc)
            raise _reply(451, "4.3.0", "cannot hold the message, try again later") from exc

    async def _run(self, t: Transaction) -> list[Copy]:
        inside = [r for r in t.recipients if self.settings.is_internal(r)]
        outside = [r for r in t.recipients if not self.settings.is_internal(r)]
        copies: list[Copy] = []
        held: list[Decision] = []
        if outside:
            copies, held = await self._outbound(t, outside)
        for recipient in inside:
            copies.append(await self._inbound(t, recipient))
        if held and self.quarantine is None:
            raise _reply(451, "4.7.1", "policy says hold but no quarantine is configured")
        if held and self.quarantine is not None:
            recipients = tuple(d.recipient for d in held)
            reason = "; ".join(sorted({f"{d.reason}" for d in held}))
            ident = await asyncio.to_thread(self.quarantine.hold, t, recipients, reason)
            log.info("queue_id=%s held as %s for %s", t.queue_id, ident, ",".join(recipients))
            copies.append(Copy(recipients, b"", ("outbound", HOLD)))
        return copies

    # -- outbound -------------------------------------------------------------------------
    async def _outbound(
        self, t: Transaction, recipients: Sequence[str]
    ) -> tuple[list[Copy], list[Decision]]:
        policy, sender = self.settings.policy, t.sender.lower()
        internal_sender = self.settings.is_internal(sender)
        modes = {r: policy.resolve(sender, r) for r in recipients}
        kind = _kind(t.content)
        size = len(t.content)
        # already encrypted: the CMS decides, not a header
        if await self._outbound_work(size, smime.is_encrypted, t.content):
            return [await self._finish(t, recipients, t.content, ["client-encrypted"])], []
        wants_sign = any(m[0] is not SignMode.NEVER for m in modes.values())
        identity = None
        signed = kind in ("signed", "opaque-signed")
        if internal_sender and wants_sign and not signed:
            must_sign = any(m[0] is SignMode.ALWAYS for m in modes.values())
            name = from_header.display_name(t.content, sender)
            identity = await self._signing_identity(sender, name, required=must_sign)
        looked_up = [r for r in recipients if modes[r][1] is not EncryptMode.NEVER]
        found = await asyncio.gather(
            *(
                self._encryption_cert(r, required=modes[r][1] is EncryptMode.MANDATORY)
                for r in looked_up
            )
        )
        certs = {r: c for r, c in zip(looked_up, found, strict=True) if c is not None}
        decisions = decide(
            policy,
            sender,
            recipients,
            sender_can_sign=identity is not None or signed,
            has_certificate=certs.__contains__,
        )
        _refuse_if_needed(decisions)
        groups = group(decisions)
        sender_cert = None
        if internal_sender and self.settings.encrypt_to_sender and any(e for _, e in groups):
            sender_cert = await self._encryption_cert(sender)
        copies = []
        for (sign, encrypt), members in groups.items():
            content, actions = t.content, []
            sign = sign and identity is not None and not signed
            try:
                content = await self._outbound_work(
                    size,
                    self._protect,
                    content,
                    identity if sign else None,
                    [certs[r] for r in members] if encrypt else [],
                    sender_cert,
                )
            except smime.MalformedMessage as exc:
                raise _reply(554, "5.6.0", f"malformed message cannot be protected: {exc}") from exc
            actions += ["sign"] if sign else []
            actions += ["encrypt"] if encrypt else []
            copies.append(await self._finish(t, members, content, actions or ["pass"]))
        mandatory = {r for r in recipients if modes[r][1] is EncryptMode.MANDATORY}
        await self._outbound_work(size, check_no_plaintext, copies, mandatory)
        return copies, [d for d in decisions if d.outcome is Outcome.HOLD]

    def _protect(
        self,
        content: bytes,
        identity: SigningIdentity | None,
        recipient_certs: list[x509.Certificate],
        sender_cert: x509.Certificate | None,
    ) -> bytes:
        settings = self.settings
        headers = settings.protect_headers
        if identity is not None:
            content = smime.sign(
                content,
                identity.key,
                identity.cert,
                identity.chain,
                detached=settings.detached_signature,
                protect_headers=headers,
            )
            headers = False  # RFC 8551 §3.7: the signed message is what gets encrypted
        if recipient_certs:
            content = smime.encrypt(
                content,
                recipient_certs,
                sender_cert=sender_cert,
                algorithm=settings.content_cipher,
                rsa_transport=settings.rsa_transport,
                protect_headers=headers,
            )
        return content

    async def _finish(
        self, t: Transaction, recipients: Sequence[str], content: bytes, actions: list[str]
    ) -> Copy:
        """DKIM last, over exactly what leaves."""
        key = self.settings.dkim_key(t.sender)
        if key is not None:
            try:
                content = await self._offload(dkim.sign, content, key)
                actions = [*actions, "dkim"]
            except dkim.DkimError as exc:
                log.warning("queue_id=%s not DKIM-signed: %s", t.queue_id, exc)
                actions = [*actions, "no-dkim"]
        return Copy(tuple(recipients), content, ("outbound", *actions))

    async def _signing_identity(
        self, sender: str, display_name: str | None, *, required: bool
    ) -> SigningIdentity | None:
        """The sender's key and certificate; a temporary failure (CA down, enrolment pending)
        is a 4xx only when signing is mandatory ("sign: always"), else the mail goes unsigned."""
        try:
            return await self.certificates.signing_identity(sender, display_name=display_name)
        except TemporaryFailure as exc:
            if required:
                raise
            log.warning("no signing certificate for %s yet (%s): sending unsigned", sender, exc)
            return None

    async def _encryption_cert(
        self, email: str, *, required: bool = False
    ) -> x509.Certificate | None:
        """The recipient's certificate; a directory that is down only matters (4xx) when
        encryption is mandatory for this recipient ("encrypt: allow" sends without)."""
        try:
            cert = await self.certificates.encryption_certificate(email)
        except TemporaryFailure as exc:
            if required:
                raise
            log.warning("certificate lookup for %s failed (%s): not encrypting for it", email, exc)
            return None
        if cert is not None:
            try:
                check_recipient(cert)
            except smime.UnsupportedRecipient as exc:
                log.info("certificate for %s not usable for encryption: %s", email, exc)
                return None
        return cert

    # -- inbound --------------------------------------------------------------------------
    async def _inbound(self, t: Transaction, recipient: str) -> Copy:
        content, actions = t.content, ["inbound"]

        def done(data: bytes, *more: str) -> Copy:
            return Copy((recipient,), data, (*actions, *more))

        kind = _kind(t.content)
        if kind is None:
            return done(strip_spoofed(content), "malformed")
        if kind == "enveloped":
            opened = await self._decrypt(t, content, recipient)
            if opened is None:
                return done(smime.strip_signature_headers(content), "not-decrypted")
            content, kind = opened, _kind(opened)
            actions.append("decrypt")
            if kind is None:
                return done(strip_spoofed(content), "malformed")
        if kind not in ("signed", "opaque-signed"):
            return done(
                smime.strip_signature_headers(content), *([] if len(actions) > 1 else ["pass"])
            )
        try:  # a TemporaryFailure (revocationCheck=hard, CRL unavailable) goes up: 451
            result = await self._offload(
                smime.verify,
                content,
                trust_anchors=self.settings.trust_anchors,
                intermediates=self.settings.intermediates,
                is_revoked=self.is_revoked,
            )
        except smime.SmimeError as exc:
            result = smime.VerificationResult("invalid", None, None, (), b"", str(exc))
        if result.status == "valid" and result.signer_cert is not None:
            # Only the verified signer and the CA certificates on its path: other end-entity
            # certificates stuffed into a valid signature must not become somebody's
            # encryption key, nor other CA certificates chain material for every later search.
            carried = set(result.certificates)
            cas = [c for c in result.path[1:] if is_ca(c) and c in carried]
            try:
                await self.certificates.harvest([result.signer_cert, *cas], "smime")
            except Exception as exc:  # noqa: BLE001 - best effort, the mail must still go
                log.warning("queue_id=%s harvest failed: %s", t.queue_id, exc)
        if kind == "opaque-signed" and result.content_bytes:
            content = smime.rejoin(mime.split_message(content).fields, result.content_bytes)
        return done(smime.add_signature_header(content, result), f"verify-{result.status}")

    async def _decrypt(self, t: Transaction, content: bytes, recipient: str) -> bytes | None:
        """The decrypted message, or None (logged with the reason) when no key opens it.

        A key backend that is down raises (451: the client retries); a key the backend
        cannot use for this message (a token key without ECDH permission) is a reason.
        """
        reasons: list[str] = []
        for candidate in await self.certificates.decryption_keys(recipient):
            try:
                return await self._offload(smime.decrypt, content, candidate.key, candidate.cert)
            except (smime.SmimeError, UnsupportedKeyOperation) as exc:
                reasons.append(str(exc))
        if not reasons:
            reasons.append(f"the gateway holds no decryption key for {recipient}")
        log.warning(
            "queue_id=%s not decrypted for %s: %s",
            t.queue_id,
            recipient,
            "; ".join(dict.fromkeys(reasons)),
        )
        return None


def _kind(content: bytes) -> str | None:
    """``smime_kind`` with ``opaque-signed``/``signed`` kept apart; None when malformed."""
    try:
        return smime.smime_kind(content)
    except smime.MalformedMessage:
        return None


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _refuse_if_needed(decisions: Sequence[Decision]) -> None:
    for outcome, code, status in ((Outcome.TEMPFAIL, 451, "4.7.1"), (Outcome.REJECT, 550, "5.7.1")):
        hit = [d for d in decisions if d.outcome is outcome]
        if hit:
            who = ", ".join(f"<{d.recipient}>: {d.reason}" for d in hit[:5])
            raise _reply(code, status, f"policy refuses the message: {who}")


def check_no_plaintext(copies: Sequence[Copy], mandatory: set[str]) -> None:
    """Refuse (451) if a copy for a mandatory-encryption recipient is not encrypted: its body
    must parse as CMS EnvelopedData or AuthEnvelopedData (:mod:`gateway.smime.encrypted`)."""
    for copy in copies:
        if not mandatory.intersection(copy.recipients) or HOLD in copy.actions:
            continue
        encrypted = {"encrypt", "client-encrypted"}.intersection(copy.actions)
        if not encrypted or not smime.is_encrypted(copy.content):
            log.error("refusing plaintext for mandatory recipients %s", copy.recipients)
            raise _reply(451, "4.3.0", "internal error: refusing to send plaintext")


def strip_spoofed(content: bytes) -> bytes:
    """Remove X-Cmcgate-Signature fields from a header block the MIME parser refused."""
    end = re.search(rb"\r?\n\r?\n", content)
    head, body = (content[: end.end()], content[end.end() :]) if end else (content, b"")
    return _SPOOF.sub(b"", head) + body


def is_held(copy: Copy) -> bool:
    return HOLD in copy.actions
