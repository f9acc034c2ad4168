"""The HL7 link's exceptions: one base, one subclass per thing that can go wrong.

The outbox retries :class:`MllpError` and negative acknowledgements; an
:class:`OruBuildError` is a programming or data error and is not retried.
"""

from __future__ import annotations


class Hl7Error(Exception):
    """Base of every HL7 link error."""


class OruBuildError(Hl7Error, ValueError):
    """An ORU^R01 cannot be built or does not validate (the message names the field)."""


class AckError(Hl7Error):
    """The peer's answer is not an acknowledgement of the message sent."""


class MllpError(Hl7Error):
    """Transport failure: the message may not have been delivered."""


class MllpConnectionError(MllpError):
    """The peer refused or dropped the connection before acknowledging."""


class MllpConnectFailed(MllpConnectionError):
    """The TCP connection could not be opened (refused, unreachable); ``__cause__`` says why."""


class MllpTimeout(MllpError):
    """No complete acknowledgement arrived within the timeout."""


class FramingError(MllpError):
    """Bytes on the wire do not follow MLLP block framing (HL7 v2.5.1 Appendix C.4.3)."""
