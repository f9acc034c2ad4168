"""The "not analysed" Structured Report: the AI did not look at this study, and why.

Without it a radiologist cannot tell "AI said normal" from "AI never looked"
(issue 21 item 2). Same template family as the analysed report
(:mod:`results.sr`, TID 1500 "Imaging Measurement Report", Comprehensive 3D
SR), with no finding and no score::

    CONTAINER (126000, DCM, "Imaging Measurement Report")
      Language, Device Observer (TID 1004), Procedure Reported
      CONTAINS  Image Library (TID 1600) when the images allow it
      CONTAINS  Imaging Measurements
        Measurement Group (TID 1501) "not analysed": tracking identifiers, the
        quality gate as TID 4019 algorithm, the images as source -- no measurement
      CONTAINS  Qualitative Evaluations (TID 1500 row 12)
        TEXT Impression Description = "not analysed: <the quality gate's reason>"
        TEXT Comment = the decision-support disclaimer

Header as for the analysed report (copied patient and study through
:mod:`results.headers`, the gateway's own SR series description and
manufacturer, so it is never classified when the PACS routes it back).
The SOP Instance UID is derived from the study, the images and the reason,
so handing the same study over again queues nothing new.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from typing import Final

from highdicom import ContributingEquipment
from highdicom.sr import (
    AlgorithmIdentification,
    Comprehensive3DSR,
    ContainerContentItem,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    RelationshipTypeValues,
    SourceImageForMeasurementGroup,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.uid import UID

from results.codes import (
    COMMENT,
    IMAGING_MEASUREMENT_REPORT,
    IMPRESSION_DESCRIPTION,
    PLAIN_CHEST_XRAY,
    PROCESSING_EQUIPMENT,
    SR_DISCLAIMER,
)
from results.evidence import ResultBuildError
from results.headers import clean_header
from results.identity import GatewayIdentity, UidKind, derive_uid
from results.sr import library_images, observation_context, qualitative_evaluations, report_sr

log = logging.getLogger(__name__)

QUALITY_GATE_NAME: Final = "CXR Gateway quality gate"
"""TID 4019 Algorithm Name and model name of what decided not to analyse."""

NOT_ANALYSED_KEY: Final = "not-analysed"
"""Part of the derived UIDs, so they never equal an analysed report's."""

TRACKING_LABEL: Final = "study not analysed"


def not_analysed_uids(sources: Sequence[Dataset], text: str,
                      identity: GatewayIdentity) -> tuple[UID, UID]:
    """(Series Instance UID, SOP Instance UID) of the not-analysed SR of these images."""
    study_uid = str(sources[0].StudyInstanceUID)
    series = derive_uid(identity.uid_root, UidKind.SR_SERIES, [study_uid, NOT_ANALYSED_KEY])
    images = sorted(str(ds.SOPInstanceUID) for ds in sources)
    instance = derive_uid(identity.uid_root, UidKind.SR_INSTANCE,
                          [study_uid, NOT_ANALYSED_KEY, identity.software_version, text, *images])
    return series, instance


def build_not_analysed_sr(sources: Sequence[Dataset], text: str, identity: GatewayIdentity,
                          now: datetime.datetime | None = None) -> Comprehensive3DSR:
    """The SR saying ``text`` ("not analysed: <reason>") about the study of ``sources``."""
    if not sources or len({str(ds.StudyInstanceUID) for ds in sources}) != 1:
        raise ResultBuildError("sources: expected images of one study")
    headers = [clean_header(ds).dataset for ds in sources]
    now = now or datetime.datetime.now()
    uids = not_analysed_uids(headers, text, identity)
    sr = report_sr(headers, _report(headers, text, identity), uids, identity,
                   _gate_equipment(identity), QUALITY_GATE_NAME, now)
    log.info("built not-analysed SR %s for study %s, %d image(s)", uids[1],
             headers[0].StudyInstanceUID, len(headers))
    return sr


def _report(sources: Sequence[Dataset], text: str,
            identity: GatewayIdentity) -> MeasurementReport:
    study_uid = str(sources[0].StudyInstanceUID)
    gate = AlgorithmIdentification(name=QUALITY_GATE_NAME, version=identity.software_version,
                                   manufacturer=identity.manufacturer)
    tracking_uid = derive_uid(identity.uid_root, UidKind.TRACKING, [study_uid, NOT_ANALYSED_KEY])
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=tracking_uid, identifier=TRACKING_LABEL),
        algorithm_id=gate,
        source_images=[SourceImageForMeasurementGroup.from_source_image(ds) for ds in sources])
    report = MeasurementReport(
        observation_context=observation_context(identity, QUALITY_GATE_NAME),
        procedure_reported=PLAIN_CHEST_XRAY, imaging_measurements=[group],
        title=IMAGING_MEASUREMENT_REPORT, referenced_images=library_images(sources))
    report[0].ContentSequence.append(_evaluations(text))
    return report


def _evaluations(text: str) -> ContainerContentItem:
    """TID 1500 row 12: the reason as text, and the disclaimer; no coded finding."""
    return qualitative_evaluations([
        TextContentItem(name=IMPRESSION_DESCRIPTION, value=text,
                        relationship_type=RelationshipTypeValues.CONTAINS),
        TextContentItem(name=COMMENT, value=SR_DISCLAIMER,
                        relationship_type=RelationshipTypeValues.CONTAINS),
    ])


def _gate_equipment(identity: GatewayIdentity) -> ContributingEquipment:
    """Contributing Equipment (PS3.3 C.12.1.1.5): the gateway's quality gate."""
    return ContributingEquipment(
        manufacturer=identity.manufacturer, purpose_of_reference=PROCESSING_EQUIPMENT,
        manufacturer_model_name=QUALITY_GATE_NAME,
        software_versions=[identity.software_version],
        device_serial_number=identity.serial_number, institution_name=identity.institution_name,
        station_name=identity.name,
        contribution_description="quality gate: the images were not analysed")
