"""The RA service's parts of the store, gathered in one mixin of
:class:`ca.store.orders.Store` (each part keeps its tables in its own module, on the same
``Base``; existing databases get them from ``create_all``)."""

from __future__ import annotations

from ca.store.apikeys import ApiKeysMixin
from ca.store.challenges import ChallengesMixin
from ca.store.domains import DomainsMixin
from ca.store.notifications import NotificationsMixin
from ca.store.p12 import Pkcs12Mixin
from ca.store.renewals import RenewalsMixin
from ca.store.search import SearchMixin


class RaStoreMixin(
    ApiKeysMixin,
    SearchMixin,
    Pkcs12Mixin,
    RenewalsMixin,
    DomainsMixin,
    NotificationsMixin,
    ChallengesMixin,
):
    """API users and keys, RA searches, PKCS#12 pick-ups, renewals, DNS-validated domains,
    notifications, email challenges."""
