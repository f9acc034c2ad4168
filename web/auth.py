"""Who may see what: loopback-only without a token, bearer token or basic auth with one.

Policy (``web`` settings):

* no ``web.auth_token``: the console and API answer loopback clients only;
  the schema refuses a non-loopback ``web.bind_address`` without a token, and
  this check is the second line of defence if the app is bound elsewhere;
* ``web.auth_token`` set: every protected route needs
  ``Authorization: Bearer <token>`` or HTTP basic auth with the token as the
  password (any user name, RFC 7617), compared in constant time.

``/healthz`` and ``/readyz`` stay open (orchestrators probe them); everything
that shows patient data (studies, results, uploads) or the configuration is
protected, as are the console pages and ``/metrics``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from typing import Final

from fastapi import HTTPException, Request, status

from config.schema import is_loopback_address as is_loopback

log = logging.getLogger(__name__)

REALM: Final = "CXR gateway"


def _presented_secret(header: str) -> str | None:
    """The token of a bearer header or the password of a basic header, else ``None``."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None


class Access:
    """The access check every protected route depends on (``Depends(access)``)."""

    def __init__(self, token: str | None) -> None:
        self._token = token

    @property
    def token_required(self) -> bool:
        return self._token is not None

    def allowed(self, request: Request) -> bool:
        if self._token is None:
            client = request.client
            return client is not None and is_loopback(client.host)
        secret = _presented_secret(request.headers.get("authorization", ""))
        return secret is not None and hmac.compare_digest(secret.encode(), self._token.encode())

    def __call__(self, request: Request) -> None:
        if self.allowed(request):
            return
        if self._token is None:
            log.warning("refused a non-loopback client: web.auth_token is not set")
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                "this gateway answers loopback clients only (web.auth_token not set)")
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            "authentication required: bearer token or basic auth (web.auth_token)",
                            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
