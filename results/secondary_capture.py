"""The heatmap Secondary Capture: the radiograph, where the model looked, and a caption.

For viewers that do not render SR, the result is also a picture (Secondary
Capture Image IOD, PS3.3 A.8.1, built with highdicom's ``SCImage``):

* the radiograph in presentation gray (:func:`inference.pixels.dicom_to_gray`),
  with the TB-vs-normal class activation heatmap laid over it in colour;
* a caption band burned in below the image: the finding, each classifier's
  score and threshold, model names and versions, "AI result — not a diagnosis";
* Burned In Annotation YES (PS3.3 C.7.6.1.1.11), Image Type DERIVED\\SECONDARY,
  Source Image Sequence pointing at the radiograph (PS3.3 C.7.6.1.1.2);
* the source's patient and study, its own series whose Manufacturer and
  Series Description mark it as the gateway's own output (never re-classified);
* SOP Instance UID derived from the study, the source image and the models,
  so that a rebuilt picture keeps its UID.
"""

from __future__ import annotations

import datetime
import logging
import warnings
from typing import Final

import numpy as np
from highdicom.sc import SCImage
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from inference.own_outputs import HEATMAP_SERIES_DESCRIPTION
from inference.pixels import dicom_to_gray
from inference.results import ClassifierScore, Prediction, impression
from results.codes import SC_DISCLAIMER, SOURCE_IMAGE_FOR_PROCESSING
from results.evidence import ClassifiedImage, ResultBuildError, check_images
from results.headers import clean_header
from results.identity import GatewayIdentity, UidKind, algorithm_equipment, derive_uid, models_key
from results.overlay import HEATMAP_RULE, MAX_SIDE, add_caption, fit_size, gray_to_uint8, overlay_heatmap

log = logging.getLogger(__name__)

SC_SERIES_NUMBER: Final = 9902
"""Series Number of the gateway's heatmap series (after the SR series, 9901)."""

UTF8: Final = "ISO_IR 192"
BIPED_ORIENTATIONS: Final = frozenset("AHFLPR")
"""Letters allowed in a biped Patient Orientation value (PS3.3 C.7.6.1.1.1)."""

LATERALITY: Final = 0x00200060
"""Laterality (0020,0060), General Series Module."""

PLACEHOLDER_ORIENTATION: Final = ("L", "F")
"""Given to highdicom when the source has none; removed again (Type 2 then, left empty)."""


def sc_uids(image: ClassifiedImage, identity: GatewayIdentity) -> tuple[UID, UID]:
    """(Series Instance UID, SOP Instance UID) of the heatmap picture of ``image``."""
    study_uid = str(image.dataset.StudyInstanceUID)
    models = models_key(image.prediction)
    series = derive_uid(identity.uid_root, UidKind.SC_SERIES, [study_uid, *models])
    instance = derive_uid(identity.uid_root, UidKind.SC_INSTANCE,
                          [study_uid, image.source_key, *models])
    return series, instance


def caption_lines(prediction: Prediction) -> list[str]:
    """What is burned into the picture: finding, scores against thresholds, models, disclaimer."""
    return [
        f"AI finding: {impression(prediction.tb_vs_normal, prediction.pneumonia_vs_tb).text}",
        _score_line("TB vs normal", prediction.tb_vs_normal),
        _score_line("Pneumonia vs TB", prediction.pneumonia_vs_tb),
        *heatmap_lines(prediction.tb_vs_normal),
        SC_DISCLAIMER,
    ]


def heatmap_lines(tb: ClassifierScore) -> list[str]:
    """The caption lines that say what the colour means (:data:`results.overlay.HEATMAP_RULE`)."""
    if tb.score < tb.threshold:
        return [f"Heatmap: none drawn, TB score below its threshold ({tb.model_name})"]
    return [f"Heatmap: where {tb.model_name} looked for TB", f"Colour: {HEATMAP_RULE}"]


def _score_line(title: str, score: ClassifierScore) -> str:
    return (f"{title}: score {score.score:.3f}, threshold {score.threshold:.3f} "
            f"({score.model_name} {score.model_version})")


def render_heatmap_picture(gray: NDArray[np.floating], prediction: Prediction,
                           max_side: int = MAX_SIDE) -> NDArray[np.uint8]:
    """RGB picture (rows, columns, 3): radiograph, heatmap overlay and caption band."""
    if prediction.heatmap is None:
        raise ResultBuildError("prediction.heatmap: this prediction has no heatmap")
    size = fit_size((int(gray.shape[0]), int(gray.shape[1])), max_side)
    base = gray_to_uint8(gray, size)
    tb = prediction.tb_vs_normal
    overlaid = overlay_heatmap(base, prediction.heatmap, prediction.crop_box, tb.score, tb.threshold)
    return add_caption(overlaid, caption_lines(prediction))


def build_heatmap_sc(image: ClassifiedImage, identity: GatewayIdentity,
                     gray: NDArray[np.floating] | None = None,
                     now: datetime.datetime | None = None,
                     max_side: int = MAX_SIDE) -> SCImage:
    """The heatmap Secondary Capture of one classified image.

    ``gray`` is the presentation image when the caller already has it;
    otherwise it is decoded from ``image.dataset`` (which then needs its pixels).
    """
    check_images([image])
    now = now or datetime.datetime.now()
    picture = render_heatmap_picture(dicom_to_gray(image.dataset) if gray is None else gray,
                                     image.prediction, max_side)
    source = clean_header(image.dataset).dataset  # what is copied: valid values only
    series_uid, sop_uid = sc_uids(image, identity)
    orientation = _source_orientation(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom's PN warnings quote the name
        sc = _sc_image(source, picture, series_uid, sop_uid, orientation, image, identity, now)
    _mark_derived(sc, source, has_orientation=orientation is not None)
    log.info("built heatmap SC %s for image %s", sop_uid, image.sop_instance_uid)
    return sc


def _sc_image(source: Dataset, picture: NDArray[np.uint8], series_uid: UID, sop_uid: UID,
              orientation: tuple[str, str] | None, image: ClassifiedImage,
              identity: GatewayIdentity, now: datetime.datetime) -> SCImage:
    return SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=picture, photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=series_uid,
        series_number=SC_SERIES_NUMBER, sop_instance_uid=sop_uid,
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=identity.manufacturer,
        patient_orientation=orientation or PLACEHOLDER_ORIENTATION,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[algorithm_equipment(identity, image.prediction)],
        series_description=HEATMAP_SERIES_DESCRIPTION, specific_character_set=UTF8,
        software_versions=identity.software_version, institution_name=identity.institution_name,
        content_date=now.date(), content_time=now.time(),
        series_date=now.date(), series_time=now.time(),
    )


def _source_orientation(source: Dataset) -> tuple[str, str] | None:
    """The source's Patient Orientation when it is two valid biped values, else None."""
    values = [str(v) for v in (source.get("PatientOrientation") or [])]
    if len(values) == 2 and all(v and set(v) <= BIPED_ORIENTATIONS for v in values):
        return values[0], values[1]
    return None


def _mark_derived(sc: SCImage, source: Dataset, has_orientation: bool) -> None:
    """General Image attributes saying what this picture is and where it comes from."""
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = SC_DISCLAIMER
    sc.DerivationDescription = "AI heatmap overlay with burned-in caption (CXR Gateway)"
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = (
        SOURCE_IMAGE_FOR_PROCESSING.value, SOURCE_IMAGE_FOR_PROCESSING.scheme_designator,
        SOURCE_IMAGE_FOR_PROCESSING.meaning)
    reference.PurposeOfReferenceCodeSequence = [purpose]
    sc.SourceImageSequence = [reference]
    if source.get("BodyPartExamined"):
        sc.BodyPartExamined = source.BodyPartExamined
    else:  # unknown body part: dciodvfy then asks for Laterality (Type 2C, PS3.3 C.7.3.1); empty
        sc.add_new(LATERALITY, "CS", None)
    if not has_orientation:
        sc["PatientOrientation"].value = None
