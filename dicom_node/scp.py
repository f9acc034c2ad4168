"""Start the SCP: an Application Entity with the node's contexts, policy and handlers.

TLS follows the DICOM secure transport connection profiles (PS3.15 annex
B.1/B.9): TLS 1.2 or newer, server certificate and key, and, when
``dicom.tls.require_client_cert`` is set, peers must present a certificate
signed by ``dicom.tls.ca_file``.
"""

from __future__ import annotations

import logging
import ssl

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from config.schema import DicomSettings, Settings, TlsSettings
from dicom_node.contexts import storage_contexts, verification_contexts
from dicom_node.errors import StartupError
from dicom_node.intake import Intake
from dicom_node.policy import AssociationPolicy

log = logging.getLogger(__name__)


def build_ae(dicom: DicomSettings) -> AE:
    """The Application Entity with timeouts, limits and supported contexts."""
    ae = AE(ae_title=dicom.ae_title)
    ae.maximum_associations = dicom.max_associations
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


def start_scp(settings: Settings, intake: Intake) -> ThreadedAssociationServer:
    """Listen on ``dicom.bind_address:dicom.port`` in background threads."""
    dicom = settings.dicom
    policy = AssociationPolicy.from_settings(dicom)
    context = server_ssl_context(dicom.tls, settings) if dicom.tls.enabled else None
    handlers: list[evt.EventHandlerType] = [
        (evt.EVT_REQUESTED, policy.handle_requested),
        (evt.EVT_C_ECHO, intake.handle_echo),
        (evt.EVT_C_STORE, intake.handle_store),
    ]
    ae = build_ae(dicom)
    try:
        server = ae.start_server((dicom.bind_address, dicom.port), block=False,
                                 evt_handlers=handlers, ssl_context=context)
    except OSError as err:
        raise StartupError(f"cannot listen on {dicom.bind_address}:{dicom.port} ({err}); "
                           "set dicom.bind_address/dicom.port to a free local address") from err
    if server is None:
        raise StartupError("pynetdicom returned no server for a non-blocking start")
    log.info("DICOM SCP %s listening on %s:%d%s", dicom.ae_title, dicom.bind_address, dicom.port,
             " (TLS)" if context else "")
    return server
