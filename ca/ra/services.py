"""The RA service objects of one authority, built together (a reloaded CA gets new ones).

``RaServices.build(ca)`` makes every service from the authority and sets the authority's RA
hooks: an order waiting in PENDING_VALIDATION starts its email challenges, an issued order
gets its confirmation mail. ``cmcgate ca serve`` builds them in
:meth:`ca.service.http.CaService._open`; the REST API (:mod:`ca.ra.api`) and the
confirmation page (:mod:`ca.ra.confirm_page`) find them there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ca.ra.auth import RaAuth
from ca.ra.challenges import ChallengeService
from ca.ra.domains import DomainService
from ca.ra.keygen import KeygenService
from ca.ra.notify import Notifier
from ca.ra.renewal import RenewalService

if TYPE_CHECKING:
    from ca.authority import CertificateAuthority

log = logging.getLogger(__name__)


@dataclass
class RaServices:
    ca: CertificateAuthority
    auth: RaAuth
    domains: DomainService
    notifier: Notifier
    challenges: ChallengeService
    keygen: KeygenService
    renewal: RenewalService

    @classmethod
    def build(cls, ca: CertificateAuthority) -> RaServices:
        notifier = Notifier(ca, background=True)  # order confirmations off the request path
        challenges = ChallengeService(ca, notifier)
        keygen = KeygenService(ca, notifier)
        services = cls(
            ca=ca,
            auth=RaAuth(ca),
            domains=DomainService(ca),
            notifier=notifier,
            challenges=challenges,
            keygen=keygen,
            renewal=RenewalService(ca, notifier, keygen),
        )
        ca.on_pending_validation = challenges.start
        ca.on_issued = notifier.order_issued
        mailing = [p.id for p in ca.settings.products
                   if p.mailbox_validation or p.key_generation.allows(True)]  # fmt: skip
        if mailing and not ca.settings.ra.mail_configured:
            log.warning(
                "products %s mail challenges or PKCS#12 PINs, but ca.yaml has no ra.mail: "
                "they go to %s:%d", ", ".join(mailing), ca.settings.ra.mail.host,
                ca.settings.ra.mail.port,
            )  # fmt: skip
        return services
