"""Start the SCP: an Application Entity with the node's contexts, policy and handlers.

TLS follows the DICOM secure transport connection profiles (PS3.15 annex
B.1/B.9): TLS 1.2 or newer, server certificate and key, and, when
``dicom.tls.require_client_cert`` is set, peers must present a certificate
signed by ``dicom.tls.ca_file``. The handshake runs in the connection's own
thread within the establishment deadline (:mod:`dicom_node.gate`), so a silent
peer delays no one else.
"""

from __future__ import annotations

import logging
import ssl
from typing import Final

from pynetdicom import AE, evt

from config.schema import DicomSettings, Settings, TlsSettings
from dicom_node.admission import Admission, Limits, Refusals
from dicom_node.contexts import storage_contexts, verification_contexts
from dicom_node.errors import StartupError
from dicom_node.gate import GatedServer, serve_gated
from dicom_node.intake import Intake
from dicom_node.policy import AssociationPolicy

log = logging.getLogger(__name__)

PYNETDICOM_THREAD_CEILING: Final = 1000


def build_ae(dicom: DicomSettings) -> AE:
    """The Application Entity with timeouts, limits and supported contexts."""
    ae = AE(ae_title=dicom.ae_title)
    # Admission (dicom_node/admission.py) enforces dicom.max_associations. pynetdicom's own
    # count is of threads, and the thread of a connection closed before its A-ASSOCIATE-RQ
    # lives on until the establishment deadline: its limit is only a ceiling on threads.
    ae.maximum_associations = max(PYNETDICOM_THREAD_CEILING, dicom.max_associations)
    ae.acse_timeout = dicom.timeouts.acse
    ae.dimse_timeout = dicom.timeouts.dimse
    ae.network_timeout = dicom.timeouts.network
    ae.require_called_aet = False  # the policy checks it, with a logged reason
    ae.supported_contexts = verification_contexts() + storage_contexts()
    return ae


def server_ssl_context(tls: TlsSettings, settings: Settings) -> ssl.SSLContext:
    """Server-side TLS context; raises :class:`StartupError` naming the bad setting."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is None or tls.key_file is None:
        raise StartupError("dicom.tls.cert_file and dicom.tls.key_file must be set")
    cert, key = settings.path(tls.cert_file), settings.path(tls.key_file)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise StartupError(f"dicom.tls.cert_file/key_file ({cert}, {key}): cannot load "
                           f"({err}); give a PEM certificate and its private key") from err
    if tls.ca_file is not None:
        ca = settings.path(tls.ca_file)
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as err:
            raise StartupError(f"dicom.tls.ca_file ({ca}): cannot load ({err}); "
                               "give a PEM CA certificate") from err
    context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_NONE
    return context


def start_scp(settings: Settings, intake: Intake) -> GatedServer:
    """Listen on ``dicom.bind_address:dicom.port`` in background threads.

    Every refused connection or association is logged and counted in the
    server's ``admission.refusals`` (``/metrics`` reads it).
    """
    dicom = settings.dicom
    refusals = Refusals()
    policy = AssociationPolicy.from_settings(dicom, refusals)
    context = server_ssl_context(dicom.tls, settings) if dicom.tls.enabled else None
    handlers: list[evt.EventHandlerType] = [
        (evt.EVT_REQUESTED, policy.handle_requested),
        (evt.EVT_C_ECHO, intake.handle_echo),
        (evt.EVT_C_STORE, intake.handle_store),
        (evt.EVT_PDU_RECV, intake.handle_pdu),  # dicom.max_instance_mb, counted as it streams
        (evt.EVT_CONN_OPEN, intake.handle_conn_open),  # no PDU longer than 1 MB is read
    ]
    admission = Admission(Limits.from_settings(dicom), refusals)
    try:
        server = serve_gated(build_ae(dicom), (dicom.bind_address, dicom.port), handlers,
                             admission, context)
    except OSError as err:
        raise StartupError(f"cannot listen on {dicom.bind_address}:{dicom.port} ({err}); "
                           "set dicom.bind_address/dicom.port to a free local address") from err
    limits = admission.limits
    log.info("DICOM SCP %s listening on %s:%d%s; at most %d associations, %d per host, %d "
             "negotiating, %g s to establish", dicom.ae_title, dicom.bind_address, dicom.port,
             " (TLS)" if context else "", limits.total, limits.per_host, limits.pending,
             limits.deadline_s)
    return server
