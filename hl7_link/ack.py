"""Reading the receiver's acknowledgement (HL7 v2.5.1 2.9 and 2.14.8 MSA segment).

MSA-1 carries the acknowledgment code of HL7 table 0008; MSA-2 repeats the
Message Control ID (MSH-10) of the message acknowledged. Original mode answers
AA/AE/AR; enhanced mode accept acknowledgements answer CA/CE/CR.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from hl7_link.errors import AckError
from hl7_link.escaping import unescape

log = logging.getLogger(__name__)


class AckCode(StrEnum):
    """HL7 table 0008, Acknowledgment code."""

    APPLICATION_ACCEPT = "AA"
    APPLICATION_ERROR = "AE"
    APPLICATION_REJECT = "AR"
    COMMIT_ACCEPT = "CA"
    COMMIT_ERROR = "CE"
    COMMIT_REJECT = "CR"

    @property
    def accepted(self) -> bool:
        """The receiver took responsibility for the message (AA or CA): delivery is done."""
        return self in (AckCode.APPLICATION_ACCEPT, AckCode.COMMIT_ACCEPT)


@dataclass(frozen=True)
class Ack:
    """A parsed acknowledgement."""

    code: AckCode
    control_id: str  # MSA-2: the MSH-10 of the message acknowledged
    text: str  # MSA-3 text message (may be empty), unescaped

    @property
    def accepted(self) -> bool:
        return self.code.accepted


def parse_ack(text: str, expected_control_id: str | None = None) -> Ack:
    """Parse an ACK; AckError when it has no valid MSA or acknowledges another message."""
    try:
        message = parse_message(text.strip(), validation_level=VALIDATION_LEVEL.TOLERANT,
                                find_groups=False)
        msa = message.msa
        repeated = len(msa.msa_1) > 1 or len(msa.msa_2) > 1
        raw_code = msa.msa_1.to_er7()
        control_id = unescape(msa.msa_2.to_er7())
        info = unescape(msa.msa_3.to_er7()) if msa.msa_3 is not None else ""
    except (HL7apyException, AttributeError, IndexError, ValueError) as err:
        raise AckError(f"answer is not an HL7 acknowledgement with an MSA segment ({err})") from err
    if repeated:  # MSA-1 and MSA-2 do not repeat (v2.5.1 2.14.8): "AA~AE" is no answer
        raise AckError("MSA-1 or MSA-2 repeated: not one acknowledgement")
    try:
        code = AckCode(raw_code.strip())
    except ValueError:
        raise AckError(f"MSA-1 {raw_code!r}: expected one of HL7 table 0008 "
                       f"({', '.join(c.value for c in AckCode)})") from None
    if expected_control_id is not None and control_id != expected_control_id:
        raise AckError(f"MSA-2 {control_id!r} acknowledges another message; "
                       f"expected {expected_control_id!r}")
    return Ack(code, control_id, info)
