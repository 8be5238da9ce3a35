"""The RA service objects of one authority, built together (a reloaded CA gets new ones).

``RaServices.build(ca)`` makes every service from the authority and sets the authority's RA
hooks; ``cmcgate ca serve`` builds them in :meth:`ca.service.http.CaService._open` and the REST
API (:mod:`ca.ra.api`) finds them there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ca.ra.auth import RaAuth
from ca.ra.domains import DomainService

if TYPE_CHECKING:
    from ca.authority import CertificateAuthority


@dataclass
class RaServices:
    ca: CertificateAuthority
    auth: RaAuth
    #: the other helpers' services; None where a part is not built in
    domains: Any = None
    notifier: Any = None
    challenges: Any = None
    keygen: Any = None
    renewal: Any = None

    @classmethod
    def build(cls, ca: CertificateAuthority) -> RaServices:
        return cls(ca=ca, auth=RaAuth(ca), domains=DomainService(ca))
