"""The mailbox holder's confirmation page, on the CA's public plain-HTTP listener.

``GET /ra/confirm/{id}`` shows a small form and changes nothing (mail scanners and link
previews fetch links); ``POST /ra/confirm/{id}`` with the form field ``code`` answers the
challenge (:meth:`ca.ra.challenges.ChallengeService.answer`). Answers are short HTML pages
with the status the REST API would give (404 unknown id, 400 wrong code, 409 failed, 410
expired, 503 while the RA service is not running); never a stack trace.

The page sits where the CRLs are served: that listener is public and asks for no client
certificate, which a mailbox holder does not have.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from ca.ra.challenges import ChallengeService
from ca.store.challenges import ChallengeStatus
from config.errors import CmcgateError

log = logging.getLogger(__name__)

#: a form with one code needs no more
MAX_FORM_BYTES = 4096


class HasChallenges(Protocol):
    """The RA services object (``ca/ra/services.py``): only its challenge service is used."""

    @property
    def challenges(self) -> ChallengeService: ...


def _page(title: str, text: str, status: int = 200, form_for: str | None = None) -> web.Response:
    form = ""
    if form_for is not None:
        form = (
            f'<form method="post" action="/ra/confirm/{html.escape(form_for, quote=True)}">'
            '<label>Code: <input name="code" size="34" autocomplete="off" autofocus></label> '
            '<button type="submit">Confirm</button></form>'
        )
    body = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(text)}</p>{form}</body></html>\n"
    )
    return web.Response(
        status=status, text=body, content_type="text/html", charset="utf-8",
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                 "Content-Security-Policy": "default-src 'none'; form-action 'self'"},
    )  # fmt: skip


def add_confirmation_routes(
    app: web.Application, get_services: Callable[[], HasChallenges | None]
) -> None:
    """Add the two routes; ``get_services()`` gives the RA services (an object with a
    ``challenges`` attribute) or None while the RA service is not set up."""

    def service() -> ChallengeService | None:
        services = get_services()
        return None if services is None else services.challenges

    async def run(func: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, func)

    async def show(request: web.Request) -> web.Response:
        challenges = service()
        if challenges is None:
            return _page("Unavailable", "Mailbox confirmation is not available now.", 503)
        challenge_id = request.match_info["challenge_id"]
        try:
            challenge = await run(lambda: challenges.store.get_challenge(challenge_id))
        except CmcgateError:
            return _page("Not found", "There is no such confirmation request.", 404)
        if challenge.status is not ChallengeStatus.PENDING:
            text = f"This confirmation request is {challenge.status.value.lower()}."
            return _page("Mailbox confirmation", text)
        text = (f"Enter the code mailed to {challenge.email} to confirm that you control this "
                "mailbox (certificate order " + challenge.order_id + ").")  # fmt: skip
        return _page("Mailbox confirmation", text, form_for=challenge.id)

    async def confirm(request: web.Request) -> web.Response:
        challenges = service()
        if challenges is None:
            return _page("Unavailable", "Mailbox confirmation is not available now.", 503)
        if (request.content_length or 0) > MAX_FORM_BYTES:
            return _page("Too large", "The form is too large.", 413)
        challenge_id = request.match_info["challenge_id"]
        try:
            form = await request.post()
        except Exception:  # noqa: BLE001 - a malformed form body
            return _page("Bad request", "Send the form with the field code.", 400)
        code = form.get("code")
        if not isinstance(code, str) or not code.strip():
            return _page("Bad request", "Enter the code from the mail.", 400, challenge_id)
        try:
            order = await run(lambda: challenges.answer(challenge_id, code))
        except CmcgateError as exc:
            status = int(getattr(exc, "status", 400))
            if status == 404:
                return _page("Not found", "There is no such confirmation request.", 404)
            again = challenge_id if status == 400 else None
            return _page("Not confirmed", str(exc), status, again)
        except Exception:  # noqa: BLE001 - never a trace to the mailbox holder
            log.exception("confirming email challenge %s", challenge_id[:64])
            return _page("Error", "The confirmation could not be processed; try later.", 500)
        text = (f"Thank you: your mailbox is confirmed. Certificate order {order.id} is now "
                f"{order.status.value}.")  # fmt: skip
        return _page("Mailbox confirmed", text)

    app.router.add_get("/ra/confirm/{challenge_id}", show, allow_head=False)
    app.router.add_post("/ra/confirm/{challenge_id}", confirm)
