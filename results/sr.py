"""The DICOM Structured Report of a study's classification (Comprehensive 3D SR, TID 1500).

Content tree (PS3.16 TID 1500 "Measurement Report", built with highdicom)::

    CONTAINER (126000, DCM, "Imaging Measurement Report")
      HAS CONCEPT MOD  Language (TID 1204)
      HAS OBS CONTEXT  Device Observer (TID 1004): UID, name, manufacturer,
                       model name (the classifiers), serial number
      HAS CONCEPT MOD  Procedure Reported = (399208008, SCT, "Plain chest X-ray")
      CONTAINS         Image Library (TID 1600): every source image
      CONTAINS         Imaging Measurements
        Measurement Group (TID 1501), one per classified image, then one for the study:
          Tracking Identifier / Tracking Unique Identifier
          Algorithm Identification (TID 4019): the combination rule and gateway version
          Source of Measurement: the image(s)
          NUM Probability (unit "1")      + TID 4019 of its classifier (name, version)
          NUM Threshold Value (unit "1")  + TID 4019 of its classifier
          (the two above for TB-vs-normal and for pneumonia-vs-TB)
          CODE Impression = SNOMED CT tuberculosis / pneumonia / no abnormality detected
      CONTAINS         Qualitative Evaluations (TID 1500 row 12)
          CODE Impression = the study's combined finding
          TEXT Impression Description = scores, thresholds and the combination rule
          TEXT Comment = "AI decision support — not a diagnosis ..."
          TEXT Comment = each note of the result ("patient age unknown: ...")

Header: same patient and study as the source images (copied by highdicom),
its own series (Series Description marks it as the gateway's own output,
:mod:`inference.own_outputs`), Verification Flag UNVERIFIED, Preliminary
Flag PRELIMINARY, Contributing Equipment naming the algorithm (IHE AI
Results). SOP Instance UID derived from the study, models, thresholds and
source images (:mod:`results.identity`), so a rebuilt SR keeps its UID.
"""

from __future__ import annotations

import datetime
import logging
import warnings
from collections.abc import Sequence
from typing import Final

from highdicom import ContributingEquipment
from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    Comprehensive3DSR,
    ContainerContentItem,
    ContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForMeasurementGroup,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from inference.own_outputs import SR_SERIES_DESCRIPTION
from inference.results import ClassifierScore, Prediction
from results.codes import (
    COMBINATION_RULE,
    COMMENT,
    IMAGING_MEASUREMENT_REPORT,
    IMPRESSION,
    IMPRESSION_DESCRIPTION,
    NO_UNITS,
    PLAIN_CHEST_XRAY,
    PROBABILITY,
    QUALITATIVE_EVALUATIONS,
    SR_DISCLAIMER,
    THRESHOLD_VALUE,
    impression_code,
    impression_summary,
)
from results.evidence import ClassifiedImage, check_images
from results.headers import clean_header
from results.identity import (
    GatewayIdentity,
    UidKind,
    algorithm_equipment,
    derive_uid,
    models_key,
)

log = logging.getLogger(__name__)

SR_SERIES_NUMBER: Final = 9901
"""Series Number of the gateway's SR series (high, to sort after acquired series)."""

COMBINED_ALGORITHM_NAME: Final = "CXR Gateway combined impression"
"""TID 4019 Algorithm Name of the rule that turns both classifiers into one finding."""

UTF8: Final = "ISO_IR 192"
"""Specific Character Set: UTF-8, for patient names and the disclaimer's dash (PS3.3 C.12.1.1.2)."""

VALUE_DIGITS: Final = 6
"""Decimals kept of a probability or threshold (DS holds 16 characters, PS3.5 6.2)."""


def sr_uids(images: Sequence[ClassifiedImage], study_prediction: Prediction,
            identity: GatewayIdentity) -> tuple[UID, UID]:
    """(Series Instance UID, SOP Instance UID) of the SR for these images and models.

    The series depends on the study and the models, so every revision of a
    study's report lands in the same series; the instance also depends on the
    source images (and how often each was replaced by a corrected re-send), so a
    report of a grown or corrected study is a new instance.
    """
    study_uid = str(images[0].dataset.StudyInstanceUID)
    models = models_key(study_prediction)
    series = derive_uid(identity.uid_root, UidKind.SR_SERIES, [study_uid, *models])
    sources = sorted(image.source_key for image in images)
    instance = derive_uid(identity.uid_root, UidKind.SR_INSTANCE, [study_uid, *models, *sources])
    return series, instance


def build_sr(images: Sequence[ClassifiedImage], study_prediction: Prediction,
             identity: GatewayIdentity,
             now: datetime.datetime | None = None) -> Comprehensive3DSR:
    """The Comprehensive 3D SR (TID 1500) reporting ``images`` and the study-level prediction."""
    check_images(images)
    images = _with_clean_headers(images)
    now = now or datetime.datetime.now()
    series_uid, sop_uid = sr_uids(images, study_prediction, identity)
    report = _report(images, study_prediction, identity)
    sr = report_sr([image.dataset for image in images], report, (series_uid, sop_uid), identity,
                   algorithm_equipment(identity, study_prediction), COMBINED_ALGORITHM_NAME, now)
    log.info("built SR %s for study %s: %s, %d image(s)", sop_uid,
             images[0].dataset.StudyInstanceUID, study_prediction.finding.value, len(images))
    return sr


def report_sr(evidence: Sequence[Dataset], report: MeasurementReport, uids: tuple[UID, UID],
              identity: GatewayIdentity, equipment: ContributingEquipment, model_name: str,
              now: datetime.datetime) -> Comprehensive3DSR:
    """The gateway's SR header around ``report``: its own series (:data:`SR_SERIES_NUMBER`,
    :data:`inference.own_outputs.SR_SERIES_DESCRIPTION`), unverified and preliminary,
    ``equipment`` as Contributing Equipment; ``uids`` are (series, SOP instance)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom's PN warnings quote the name
        return Comprehensive3DSR(
            evidence=evidence, content=report,
            series_instance_uid=uids[0], series_number=SR_SERIES_NUMBER,
            sop_instance_uid=uids[1], instance_number=1,
            manufacturer=identity.manufacturer, is_complete=True, is_final=False,
            is_verified=False, institution_name=identity.institution_name,
            performed_procedure_codes=[PLAIN_CHEST_XRAY],
            contributing_equipment=[equipment],
            series_description=SR_SERIES_DESCRIPTION, specific_character_set=UTF8,
            manufacturer_model_name=model_name,
            software_versions=identity.software_version,
            device_serial_number=identity.serial_number,
            content_date=now.date(), content_time=now.time(),
            series_date=now.date(), series_time=now.time(),
        )


def _with_clean_headers(images: Sequence[ClassifiedImage]) -> list[ClassifiedImage]:
    """The images with headers fit to copy (:mod:`results.headers`); what was left out is
    logged by attribute name, never by value."""
    cleaned = []
    for image in images:
        header = clean_header(image.dataset)
        if header.notes:
            log.info("image %s: header values left out of the result: %s",
                     image.sop_instance_uid, "; ".join(header.notes))
        cleaned.append(ClassifiedImage(header.dataset, image.prediction, image.replaced))
    return cleaned


def _report(images: Sequence[ClassifiedImage], study_prediction: Prediction,
            identity: GatewayIdentity) -> MeasurementReport:
    groups = [_image_group(image, identity) for image in images]
    groups.append(_study_group(images, study_prediction, identity))
    model_names = " + ".join(s.model_name for s in _scores(study_prediction))
    report = MeasurementReport(
        observation_context=observation_context(identity, model_names),
        procedure_reported=PLAIN_CHEST_XRAY,
        imaging_measurements=groups,
        title=IMAGING_MEASUREMENT_REPORT,
        referenced_images=library_images([image.dataset for image in images]),
    )
    report[0].ContentSequence.append(_report_evaluations(study_prediction))
    return report


def library_images(datasets: Sequence[Dataset]) -> list[Dataset] | None:
    """Images for the Image Library (TID 1600), or None when a projection image lacks the
    Patient Orientation or Imager Pixel Spacing its entry needs (TID 1603; both are optional
    in the CR IOD, PS3.3 A.2.3)."""
    for ds in datasets:
        if len(ds.get("PatientOrientation") or []) != 2 or "ImagerPixelSpacing" not in ds:
            log.debug("image library left out: %s lacks orientation or pixel spacing",
                      ds.SOPInstanceUID)
            return None
    return list(datasets)


def observation_context(identity: GatewayIdentity, model_name: str) -> ObservationContext:
    """TID 1001 with a Device Observer (TID 1004): the gateway, ``model_name`` what decided."""
    device = DeviceObserverIdentifyingAttributes(
        uid=identity.device_uid,
        name=identity.name,
        manufacturer_name=identity.manufacturer,
        model_name=model_name,
        serial_number=identity.serial_number,
    )
    observer = ObserverContext(observer_type=codes.DCM.Device,
                               observer_identifying_attributes=device)
    return ObservationContext(observer_person_context=None, observer_device_context=observer)


def _image_group(image: ClassifiedImage,
                 identity: GatewayIdentity) -> MeasurementsAndQualitativeEvaluations:
    ds = image.dataset
    label = f"image {ds.get('InstanceNumber', '')} {image.sop_instance_uid}".replace("  ", " ")
    return _group(label, [ds], image.prediction, identity)


def _study_group(images: Sequence[ClassifiedImage], prediction: Prediction,
                 identity: GatewayIdentity) -> MeasurementsAndQualitativeEvaluations:
    return _group("study", [image.dataset for image in images], prediction, identity)


def _group(label: str, sources: Sequence[Dataset], prediction: Prediction,
           identity: GatewayIdentity) -> MeasurementsAndQualitativeEvaluations:
    """One TID 1501 group: both classifiers' numbers and the combined finding."""
    study_uid = str(sources[0].StudyInstanceUID)
    tracking_uid = derive_uid(identity.uid_root, UidKind.TRACKING,
                              [study_uid, label, *models_key(prediction)])
    measurements = [m for score in _scores(prediction) for m in _score_measurements(score)]
    finding = QualitativeEvaluation(IMPRESSION, impression_code(prediction))
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=tracking_uid, identifier=label),
        algorithm_id=_combined_algorithm(prediction, identity),
        measurements=measurements,
        qualitative_evaluations=[finding],
        source_images=[SourceImageForMeasurementGroup.from_source_image(ds) for ds in sources],
    )


def _scores(prediction: Prediction) -> tuple[ClassifierScore, ClassifierScore]:
    return prediction.tb_vs_normal, prediction.pneumonia_vs_tb


def _score_measurements(score: ClassifierScore) -> list[Measurement]:
    """TID 300 NUMs: the probability and the operating threshold, each naming its model."""
    return [
        Measurement(name=PROBABILITY, value=round(score.score, VALUE_DIGITS), unit=NO_UNITS,
                    algorithm_id=_classifier_algorithm(score)),
        Measurement(name=THRESHOLD_VALUE, value=round(score.threshold, VALUE_DIGITS),
                    unit=NO_UNITS, algorithm_id=AlgorithmIdentification(
                        name=score.model_name, version=score.model_version)),
    ]


def _classifier_algorithm(score: ClassifierScore) -> AlgorithmIdentification:
    """TID 4019 of one classifier; parameters say what its probability is of."""
    return AlgorithmIdentification(
        name=score.model_name, version=score.model_version,
        parameters=[f"classifier: {score.classifier}",
                    f"probability of: {score.positive_label} (versus {score.negative_label})"],
    )


def _combined_algorithm(prediction: Prediction,
                        identity: GatewayIdentity) -> AlgorithmIdentification:
    """TID 4019 of the combination rule (:func:`inference.results.combine`)."""
    return AlgorithmIdentification(
        name=COMBINED_ALGORITHM_NAME, version=identity.software_version,
        parameters=[COMBINATION_RULE], manufacturer=identity.manufacturer,
    )


def _report_evaluations(prediction: Prediction) -> ContainerContentItem:
    """TID 1500 row 12: the study impression, its explanation and the disclaimer."""
    return qualitative_evaluations([
        CodeContentItem(name=IMPRESSION, value=impression_code(prediction),
                        relationship_type=RelationshipTypeValues.CONTAINS),
        TextContentItem(name=IMPRESSION_DESCRIPTION, value=impression_summary(prediction),
                        relationship_type=RelationshipTypeValues.CONTAINS),
        TextContentItem(name=COMMENT, value=SR_DISCLAIMER,
                        relationship_type=RelationshipTypeValues.CONTAINS),
        *(TextContentItem(name=COMMENT, value=note,  # e.g. "patient age unknown: ..."
                          relationship_type=RelationshipTypeValues.CONTAINS)
          for note in prediction.notes),
    ])


def qualitative_evaluations(items: Sequence[ContentItem]) -> ContainerContentItem:
    """The TID 1500 row 12 container (Qualitative Evaluations) holding ``items``."""
    container = ContainerContentItem(name=QUALITATIVE_EVALUATIONS,
                                     relationship_type=RelationshipTypeValues.CONTAINS)
    container.ContentSequence = ContentSequence(list(items))
    return container
