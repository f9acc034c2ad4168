"""What the SCP accepts: Verification and every storage SOP class, in the syntaxes PACS use.

Storage SOP classes: PS3.4 annex B (Storage Service Class) -- CR, DX for
presentation and for processing, all Secondary Capture variants, and the rest
of a study's instances (stored and recorded as skipped, never classified).
Transfer syntaxes: PS3.5 section 10 and annex A.
"""

from __future__ import annotations

from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AllStoragePresentationContexts, VerificationPresentationContexts
from pynetdicom.presentation import PresentationContext

from inference.pixels import SUPPORTED_TRANSFER_SYNTAXES

# We accept exactly what we can decode; Explicit VR Little Endian first (preferred).
TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    *(ts for ts in SUPPORTED_TRANSFER_SYNTAXES if ts != ExplicitVRLittleEndian),
)


def storage_contexts() -> list[PresentationContext]:
    """One context per storage SOP class, each offering :data:`TRANSFER_SYNTAXES`."""
    contexts = []
    for template in AllStoragePresentationContexts:
        context = PresentationContext()
        context.abstract_syntax = template.abstract_syntax
        context.transfer_syntax = list(TRANSFER_SYNTAXES)
        contexts.append(context)
    return contexts


def verification_contexts() -> list[PresentationContext]:
    """Verification SOP class (PS3.4 annex A) in the default syntaxes."""
    return list(VerificationPresentationContexts)
