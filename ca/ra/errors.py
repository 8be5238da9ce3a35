"""The one base of the RA services' refusals (key generation, renewal, notifications).

Each carries the HTTP status the REST layer answers with (:func:`ca.ra.api.problem_of` reads
``status``) and, where one exists, the order it concerns. A subclass sets its usual status
as a class attribute; a caller may give another one.
"""

from __future__ import annotations

from config.errors import CmcgateError


class RaError(CmcgateError):
    """An RA service refused; ``status`` is the HTTP answer, ``order_id`` the order."""

    status = 400

    def __init__(
        self, message: str, *, status: int | None = None, order_id: str | None = None
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.order_id = order_id
