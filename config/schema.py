"""The settings schema: every key hospital IT can set, its type, default and meaning.

One immutable :class:`Settings` object (pydantic v2, frozen) is built by
:func:`config.loader.load_settings` from defaults < YAML file < environment <
command line. Unknown keys are errors (a typo must not be silently ignored).

AE titles follow the AE value representation of DICOM PS3.5 section 6.2:
1-16 characters of the default character repertoire, no backslash, no
control characters, leading and trailing spaces not significant.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

AE_TITLE_MAX = 16
CLASSIFIERS = ("tb-vs-normal", "pneumonia-vs-tb")


def _check_ae_title(value: str) -> str:
    title = value.strip()
    if not title:
        raise ValueError("an AE title must not be empty or only spaces (PS3.5 6.2)")
    if len(title) > AE_TITLE_MAX:
        raise ValueError(f"AE title {title!r} is longer than {AE_TITLE_MAX} characters (PS3.5 6.2)")
    if "\\" in title or any(ord(c) < 0x20 or ord(c) > 0x7E for c in title):
        raise ValueError(
            f"AE title {title!r} may use printable ASCII only, without backslash (PS3.5 6.2)"
        )
    return title


AETitle = Annotated[str, AfterValidator(_check_ae_title)]
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AllowedCaller(_Section):
    """A peer allowed to open associations: its AE title and, optionally, its IP address."""

    ae_title: AETitle
    host: str | None = Field(
        default=None,
        description="IP address the peer must connect from; omit to accept it from any host")


class Timeouts(_Section):
    """Association timeouts in seconds (pynetdicom ACSE, DIMSE and network idle timeouts)."""

    acse: Seconds = Field(default=30.0, description="wait for association messages")
    dimse: Seconds = Field(default=60.0, description="wait for a DIMSE message")
    network: Seconds = Field(default=120.0, description="close an idle connection")
    establishment: Seconds = Field(
        default=10.0, description="total time from TCP connect to an established association "
                                  "(TLS handshake and A-ASSOCIATE-RQ); not extended by traffic")


class TlsSettings(_Section):
    """DICOM over TLS (PS3.15 annex B.1, secure transport connection profile)."""

    enabled: bool = False
    cert_file: Path | None = Field(default=None, description="PEM server certificate (chain)")
    key_file: Path | None = Field(default=None, description="PEM private key of cert_file")
    ca_file: Path | None = Field(default=None, description="PEM CA that signs client certs")
    require_client_cert: bool = Field(
        default=True, description="reject peers without a certificate signed by ca_file")

    @model_validator(mode="after")
    def _files_when_enabled(self) -> TlsSettings:
        if not self.enabled:
            return self
        missing = [n for n in ("cert_file", "key_file") if getattr(self, n) is None]
        if self.require_client_cert and self.ca_file is None:
            missing.append("ca_file")
        if missing:
            raise ValueError(f"TLS is enabled but {', '.join(missing)} not set: give the PEM "
                             "file paths or set dicom.tls.enabled: false")
        return self


class DicomSettings(_Section):
    """The DICOM node (SCP): identity, network, association policy."""

    ae_title: AETitle = Field(
        default="CXRGATEWAY",
        description="our AE title, 1-16 characters; peers use it as Called AE title")
    bind_address: str = Field(
        default="127.0.0.1",
        description="IP address to listen on; 0.0.0.0 for every interface")
    port: Port = Field(default=11112, description="TCP port to listen on, 1-65535")
    allowed_callers: tuple[AllowedCaller, ...] = ()
    accept_any_caller: bool = Field(
        default=False, description="accept every calling AE title (testing only)")
    check_called_ae: bool = True
    max_associations: int = Field(default=10, ge=1, le=1000)
    max_associations_per_host: int | None = Field(
        default=None, ge=1, le=1000,
        description="concurrent associations from one IP address; default half of "
                    "max_associations (at least 1)")
    reserved_associations: int | None = Field(
        default=None, ge=0, le=999,
        description="slots only associations the policy accepted may hold (connections still "
                    "negotiating cannot); default a fifth of max_associations")
    max_instance_mb: int = Field(
        default=256, ge=1, le=65536,
        description="refuse (0xA700) an instance whose dataset is larger than this as received; "
                    "counted while it streams in, the excess is not kept")
    max_inflated_mb: int = Field(
        default=256, ge=1, le=65536,
        description="refuse (0xA700) a Deflated instance that inflates to more than this; "
                    "inflated in bounded chunks; also bounds uploads (413) and the spool files "
                    "read again for reports and the console")
    timeouts: Timeouts = Timeouts()
    tls: TlsSettings = TlsSettings()

    @property
    def per_host_limit(self) -> int:
        """``max_associations_per_host``, or its default."""
        if self.max_associations_per_host is not None:
            return self.max_associations_per_host
        return max(1, self.max_associations // 2)

    @property
    def reserved_slots(self) -> int:
        """``reserved_associations``, or its default."""
        if self.reserved_associations is not None:
            return self.reserved_associations
        return self.max_associations // 5

    @model_validator(mode="after")
    def _limits_fit(self) -> DicomSettings:
        if self.max_associations_per_host is not None \
                and self.max_associations_per_host > self.max_associations:
            raise ValueError(f"dicom.max_associations_per_host ({self.max_associations_per_host}) "
                             f"is above dicom.max_associations ({self.max_associations}): lower it")
        if self.reserved_slots >= self.max_associations:
            raise ValueError(f"dicom.reserved_associations ({self.reserved_slots}) must be below "
                             f"dicom.max_associations ({self.max_associations}), or no caller "
                             "could ever connect")
        return self

    @model_validator(mode="after")
    def _someone_may_call(self) -> DicomSettings:
        if not self.allowed_callers and not self.accept_any_caller:
            raise ValueError("no PACS could connect: list the peers in dicom.allowed_callers "
                             "(ae_title and optional host) or set dicom.accept_any_caller: true")
        return self


POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://")


class StorageSettings(_Section):
    """Where received instances and the journal live."""

    spool_dir: Path = Field(default=Path("var/spool"), description="received DICOM files")
    min_free_mb: int = Field(
        default=1024, ge=0,
        description="refuse new instances (0xA700) below this free space on the spool disk")
    database: Path | str = Field(
        default=Path("var/journal.sqlite"),
        description="SQLite journal file, or a PostgreSQL URL postgresql://user@host:5432/db "
                    "shared by several nodes (password from password_file or password_env)")
    password_file: Path | None = Field(
        default=None, description="file holding the PostgreSQL password (e.g. a Docker secret)")
    password_env: str = Field(
        default="CXR_GATEWAY_DB_PASSWORD",
        description="environment variable holding the PostgreSQL password (when no password_file)")
    lease_s: Seconds = Field(
        default=60.0, description="a job, study report or delivery held by a node that stopped "
                                  "renewing it for this long is taken over by another node")
    node_name: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="this node's name in a shared database (default: host name:DICOM port); "
                    "keep it when the node restarts, so it takes back its own work at once")
    results_dir: Path = Field(
        default=Path("var/results"), description="SR and heatmap files waiting for delivery")

    @model_validator(mode="before")
    @classmethod
    def _database_kind(cls, data: object) -> object:
        """A PostgreSQL URL stays text (without a password); anything else is a SQLite path."""
        if isinstance(data, dict) and isinstance(data.get("database"), str):
            value = data["database"]
            if not value.startswith(POSTGRES_SCHEMES):
                return {**data, "database": Path(value)}
            rest = value.split("://", 1)[1].split("/", 1)[0]
            if ":" in rest.split("@", 1)[0] and "@" in rest:
                raise ValueError("storage.database: put no password in the URL; give it in "
                                 "storage.password_file or the variable named by storage.password_env")
        return data

    @property
    def shared(self) -> bool:
        """The database is PostgreSQL (several nodes may use it)."""
        return isinstance(self.database, str)


class SiteThreshold(_Section):
    """A site's operating threshold for one classifier, tied to the model version it was set for."""

    threshold: float  # in [0, 1]: checked with the bare numbers, by _check_thresholds
    model_version: str | None = Field(
        default=None,
        description="the model version the threshold was calibrated for; another version is refused")


def _check_thresholds(value: dict[str, float | SiteThreshold]) -> dict[str, float | SiteThreshold]:
    for name, setting in value.items():
        if name not in CLASSIFIERS:
            raise ValueError(
                f"unknown classifier {name!r}: expected one of {', '.join(CLASSIFIERS)}")
        threshold = setting.threshold if isinstance(setting, SiteThreshold) else setting
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold of {name} is {threshold}: expected a value in [0, 1]")
    return value


class InferenceSettings(_Section):
    """Classification workers and models."""

    workers: int = Field(
        default=1, ge=0, le=64, description="classification threads; 0 = receive and queue only")
    threads_per_model: int = Field(default=2, ge=1, le=64, description="LiteRT threads per model")
    models_dir: Path | None = Field(
        default=None,
        description="folder with tb-vs-normal/ and pneumonia-vs-tb/; null = shipped models")
    thresholds: Annotated[dict[str, float | SiteThreshold], AfterValidator(_check_thresholds)] = Field(
        default_factory=dict,
        description="override a model's stored operating threshold: a number, or "
                    "{threshold: T, model_version: V} as `cxr-gateway calibrate` prints it")
    heatmap: bool = True
    max_attempts: int = Field(
        default=3, ge=1, le=100, description="give up an instance after this many tries")
    max_pixels: int = Field(
        default=50_000_000, ge=1_000_000, le=2**31,
        description="largest frame decoded, Rows x Columns x Samples per Pixel from the header "
                    "(DICOM, PNG, JPEG); a larger one is skipped (422 by upload) before decoding")
    min_patient_age_years: float = Field(
        default=15, ge=0, le=120,
        description="intended use: images of younger patients are skipped (WHO consolidated "
                    "guidelines on TB screening, 2021: CAD for people aged 15 and over); "
                    "an unknown age is classified with a note; 0 = off")


class AggregationSettings(_Section):
    """When a study is complete enough to report."""

    quiet_period_s: Seconds = Field(
        default=120.0, description="report a study when no instance arrived for this long")
    poll_interval_s: Seconds = 1.0


class ResultsSettings(_Section):
    """How a study's report is built (issue 20 defect 1, issue 21 item 2)."""

    report_not_analysed: bool = Field(
        default=True,
        description="a study with no classified image gets an SR and ORU saying "
                    "'not analysed: <the quality gate's reason>'; false = no result")
    max_attempts: int = Field(
        default=3, ge=1, le=100,
        description="give up building a study's report after this many tries "
                    "(the study shows report-failed with the reason)")
    retry_delay_s: Seconds = Field(default=60.0, description="wait between two report attempts")


class DicomDestination(_Section):
    """A DICOM peer that receives results by C-STORE (and answers C-ECHO)."""

    name: str = Field(min_length=1)
    ae_title: AETitle
    host: str = Field(min_length=1)
    port: Port


class Hl7Destination(_Section):
    """An HL7 v2 peer (MLLP) that receives ORU^R01 messages."""

    name: str = Field(min_length=1)
    host: str = Field(min_length=1)
    port: Port
    sending_application: str = "CXRGATEWAY"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""


class Destinations(_Section):
    """Where results go (used by the results stage)."""

    dicom: tuple[DicomDestination, ...] = ()
    hl7: tuple[Hl7Destination, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> Destinations:
        for kind, items in (("dicom", self.dicom), ("hl7", self.hl7)):
            names = [d.name for d in items]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"destinations.{kind}: name(s) {', '.join(dupes)} used twice; "
                                 "give every destination its own name")
        return self


RETRY_WINDOW_MAX_S = 30 * 86400.0


class DeliverySettings(_Section):
    """How results are sent: retries with capped exponential backoff for a time, then dead-letter.

    Issue 4, and issue 20 defect 9: a destination is retried for
    ``retry_window_s`` (a PACS maintenance window is hours), not for a count of
    attempts; a failing destination is probed so its queue resumes when it returns.
    """

    retry_window_s: float = Field(
        default=86400.0, ge=0, le=RETRY_WINDOW_MAX_S,
        description="keep retrying a failing result this long (seconds) after its first failed "
                    "send, then dead-letter it; 0 = dead-letter at the first failure")
    backoff_base_s: Seconds = Field(
        default=5.0, description="wait after the first failure; doubles after each next one")
    backoff_max_s: Seconds = Field(
        default=600.0, description="longest wait between two attempts of one result")
    probe_interval_s: Seconds = Field(
        default=30.0, description="while a destination is unreachable, check it this often "
                                  "(C-ECHO / MLLP connect); when it answers, its queue resumes")
    store_timeout_s: Seconds = Field(
        default=30.0, description="C-STORE association, DIMSE and network timeout")
    mllp_connect_timeout_s: Seconds = Field(default=10.0, description="MLLP connection timeout")
    mllp_ack_timeout_s: Seconds = Field(default=30.0, description="wait this long for an HL7 ACK")
    poll_interval_s: Seconds = Field(default=1.0, description="how often to look for due results")

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: object) -> object:
        if isinstance(data, dict) and "max_attempts" in data:
            raise ValueError("max_attempts is no longer a setting: results are retried for a "
                             "time, not a count; set delivery.retry_window_s instead (seconds, "
                             "default 86400 = 24 h) and remove delivery.max_attempts")
        return data

    @model_validator(mode="after")
    def _backoff_order(self) -> DeliverySettings:
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) is below backoff_base_s "
                             f"({self.backoff_base_s}): make the longest wait at least the first")
        return self


def _check_uid_root(value: str | None) -> str | None:
    if value is None:
        return None
    from results.identity import check_uid_root  # the one rule for UID roots (PS3.5 9.1)

    return check_uid_root(value)


class IdentitySettings(_Section):
    """The gateway as the device that wrote a result (SR Device Observer, equipment, UIDs)."""

    uid_root: Annotated[str | None, AfterValidator(_check_uid_root)] = Field(
        default=None,
        description="your organisation's UID root ending in '.', e.g. '1.2.826.0.1.3680043.8.498.'"
                    "; null = the pydicom root")
    serial_number: str = Field(
        default="1", min_length=1, max_length=64,
        description="Device Serial Number; tells installations apart")
    institution_name: str | None = Field(
        default=None, max_length=64, description="Institution Name of the results")


def is_loopback_address(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: reachable from this machine only."""
    host = address.strip().strip("[]").lower()
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebSettings(_Section):
    """The web console and REST API."""

    bind_address: str = Field(
        default="127.0.0.1",
        description="IP address of the console and API; another than loopback needs web.auth_token")
    port: Port = 8080
    auth_token: str | None = Field(
        default=None, min_length=16,
        description="bearer token (or basic-auth password) the console and API require, "
                    "at least 16 characters; null = loopback clients only")
    max_upload_mb: int = Field(
        default=64, ge=1, le=4096,
        description="largest upload to /api/v1/predict; the body is counted as it streams and "
                    "refused with 413 at the limit")

    # Web console access policy (issue 5): exposing patient data beyond this machine needs a token.
    @model_validator(mode="after")
    def _token_when_exposed(self) -> WebSettings:
        if self.auth_token is None and not is_loopback_address(self.bind_address):
            raise ValueError(f"web.bind_address {self.bind_address} is reachable from other "
                             "machines: set web.auth_token (16+ characters) or bind to 127.0.0.1")
        return self


class Settings(_Section):
    """Everything the gateway reads at start-up; immutable once built."""

    base_dir: Path = Field(default=Path("."), description="base of every relative path")
    # Validated even when absent, so a missing ``dicom`` section reports the missing callers.
    dicom: DicomSettings = Field(default_factory=dict, validate_default=True)
    storage: StorageSettings = StorageSettings()
    inference: InferenceSettings = InferenceSettings()
    aggregation: AggregationSettings = AggregationSettings()
    results: ResultsSettings = ResultsSettings()
    destinations: Destinations = Destinations()
    delivery: DeliverySettings = DeliverySettings()
    identity: IdentitySettings = IdentitySettings()
    web: WebSettings = WebSettings()

    def path(self, value: Path) -> Path:
        """``value`` made absolute against :attr:`base_dir`."""
        base = self.base_dir if self.base_dir.is_absolute() else Path.cwd() / self.base_dir
        return value if value.is_absolute() else (base / value).resolve()

    def database_target(self) -> Path | str:
        """``storage.database``: the PostgreSQL URL, or the SQLite file made absolute."""
        db = self.storage.database
        return db if isinstance(db, str) else self.path(db)

    def node_name(self) -> str:
        """``storage.node_name``, or host name and DICOM port (unique per machine)."""
        return self.storage.node_name or f"{socket.gethostname()}:{self.dicom.port}"

    def database_password(self) -> str | None:
        """The PostgreSQL password from ``storage.password_file`` or ``storage.password_env``."""
        if self.storage.password_file is not None:
            return self.path(self.storage.password_file).read_text(encoding="utf-8").strip()
        return os.environ.get(self.storage.password_env) or None

    def dicom_destination(self, name: str) -> DicomDestination | None:
        return next((d for d in self.destinations.dicom if d.name == name), None)
