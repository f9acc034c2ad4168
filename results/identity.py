"""Who writes the results, and the deterministic UIDs of what it writes.

A result re-built after a crash or re-sent after a failed delivery must keep
its SOP Instance UID, so that the PACS replaces rather than duplicates it
(PS3.4 B.4.1.3: a second C-STORE of a known SOP Instance UID). UIDs are
therefore derived, not random: :func:`derive_uid` hashes the study, the
models and the inputs under the organisation's UID root (PS3.5 9.1, 9.2:
at most 64 characters, digits and dots).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import version
from typing import Final

from highdicom import ContributingEquipment
from pydicom.uid import PYDICOM_ROOT_UID, UID, generate_uid

from inference.own_outputs import GATEWAY_MANUFACTURER
from inference.results import ClassifierScore, Prediction
from results.codes import PROCESSING_EQUIPMENT

__version__: Final = version("cxr-gateway")
"""pyproject's version (read from the installed metadata: this package does not import
``cxr_gateway``, which assembles it)."""

MAX_ROOT_LENGTH: Final = 40
"""Longest UID root accepted: leaves at least 24 digits of hash (PS3.5 9.1 allows 64 in all)."""

_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.$")


class UidKind(StrEnum):
    """What a derived UID identifies; part of the hash, so kinds never collide."""

    DEVICE = "device"
    SR_SERIES = "sr-series"
    SR_INSTANCE = "sr-instance"
    SC_SERIES = "sc-series"
    SC_INSTANCE = "sc-instance"
    TRACKING = "tracking"


class IdentityError(ValueError):
    """A gateway identity setting is not usable (names the setting and what was expected)."""


def check_uid_root(root: str) -> str:
    """``root`` if it is a valid UID prefix ending in a dot (PS3.5 9.1), else IdentityError."""
    if len(root) > MAX_ROOT_LENGTH or not _ROOT.match(root):
        raise IdentityError(
            f"uid_root {root!r}: expected digits and dots ending in '.', no leading zeros, "
            f"at most {MAX_ROOT_LENGTH} characters (e.g. '1.2.826.0.1.3680043.8.498.')")
    return root


def derive_uid(root: str, kind: UidKind, parts: Iterable[str]) -> UID:
    """A UID under ``root`` that depends only on ``kind`` and ``parts`` (SHA-512 based)."""
    return generate_uid(prefix=check_uid_root(root), entropy_srcs=[kind.value, *parts])


def score_key(score: ClassifierScore) -> list[str]:
    """What identifies one classifier's contribution: model, version and threshold."""
    return [score.classifier, score.model_name, score.model_version, repr(score.threshold)]


def models_key(prediction: Prediction) -> list[str]:
    """The identity of both classifiers behind a prediction."""
    return [*score_key(prediction.tb_vs_normal), *score_key(prediction.pneumonia_vs_tb)]


@dataclass(frozen=True)
class GatewayIdentity:
    """The gateway as a device: Device Observer (TID 1004), equipment and UID root.

    ``name`` is the Device Observer Name and Station Name (the AE title is a
    good choice); ``serial_number`` tells installations apart.
    """

    name: str = "CXRGATEWAY"
    uid_root: str = PYDICOM_ROOT_UID
    serial_number: str = "1"
    software_version: str = __version__
    institution_name: str | None = None
    manufacturer: str = GATEWAY_MANUFACTURER

    def __post_init__(self) -> None:
        check_uid_root(self.uid_root)
        if not self.name.strip():
            raise IdentityError("name: expected a non-empty device name (e.g. the AE title)")

    @property
    def device_uid(self) -> UID:
        """Device Observer UID (TID 1004 row 1): stable for a name and serial number."""
        return derive_uid(self.uid_root, UidKind.DEVICE, [self.name, self.serial_number])


def algorithm_description(prediction: Prediction) -> str:
    """Both classifiers as ``name version`` pairs, e.g. for Contributing Equipment."""
    return "; ".join(f"{s.model_name} {s.model_version}"
                     for s in (prediction.tb_vs_normal, prediction.pneumonia_vs_tb))


def algorithm_equipment(identity: GatewayIdentity, prediction: Prediction) -> ContributingEquipment:
    """Contributing Equipment item naming the algorithm (PS3.3 C.12.1.1.5; IHE AI Results).

    Software Versions lists the gateway and both models, so a reader can tell
    which model versions produced the object without opening its content.
    """
    scores = (prediction.tb_vs_normal, prediction.pneumonia_vs_tb)
    return ContributingEquipment(
        manufacturer=identity.manufacturer,
        purpose_of_reference=PROCESSING_EQUIPMENT,
        manufacturer_model_name=" + ".join(s.model_name for s in scores),
        software_versions=[identity.software_version, *(s.model_version for s in scores)],
        device_serial_number=identity.serial_number,
        institution_name=identity.institution_name,
        station_name=identity.name,
        contribution_description=f"AI classification: {algorithm_description(prediction)}",
    )
