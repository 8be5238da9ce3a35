"""The pipeline's view with enrolment: internal senders without a certificate are enrolled
on their first mail (see :class:`gateway.broker.enrolment.Enroller`).

The From header's display name travels with the address: a Gold product's CN is the user's
name.  A sender who has a certificate keeps using it whatever name the next mail gives (no
new order for a changed display name).  For Gold without a usable display name nothing is
sent to the CA: the reason is logged and the sender stays without a certificate for this
message (sign=always: 451, the policy's "no signing certificate"; sign=allow: unsigned) —
not remembered as a refusal, so the next mail with a name enrols."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cryptography import x509

from config.errors import CmcgateError
from gateway.broker.enrolment import Enroller, EnrolmentRefused
from gateway.certs.view import Certificates, DecryptionKey, SigningIdentity
from gateway.pipeline import PipelineSettings

log = logging.getLogger("cmcgate.gateway.enrolment")


class EnrollingCertificates:
    """``inner`` (e.g. :class:`~gateway.certs.adapter.StoreCertificates`) plus enrolment of
    internal senders that have no signing certificate yet."""

    def __init__(
        self,
        inner: Certificates,
        enroller: Enroller,
        *,
        internal_domains: Sequence[str] = (),
    ) -> None:
        self.inner = inner
        self.enroller = enroller
        self.internal_domains = tuple(internal_domains)

    def _internal(self, email: str) -> bool:  # the pipeline asks only for internal senders
        return not self.internal_domains or PipelineSettings(self.internal_domains).is_internal(
            email
        )

    async def encryption_certificate(self, email: str) -> x509.Certificate | None:
        return await self.inner.encryption_certificate(email)

    async def signing_identity(
        self, email: str, display_name: str | None = None
    ) -> SigningIdentity | None:
        identity = await self.inner.signing_identity(email)
        if identity is not None or not self.enroller.enabled or not self._internal(email):
            return identity
        try:
            self.enroller.pki.subject_for(email, display_name)  # checked before any key/order
        except CmcgateError as exc:
            log.warning("%s is not enrolled: %s", email, exc)
            return None
        try:
            return await self.enroller.enrol_async(email, display_name)
        except EnrolmentRefused as exc:
            log.warning("%s stays without a certificate: %s", email, exc)
            return None

    async def decryption_keys(self, email: str) -> Sequence[DecryptionKey]:
        return await self.inner.decryption_keys(email)

    async def harvest(self, certificates: Sequence[x509.Certificate], source: str) -> None:
        await self.inner.harvest(certificates, source)
