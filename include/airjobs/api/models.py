"""Pydantic models of every request body and response of the facade, for its OpenAPI document.

They document, they do not validate: requests are read by ``airjobs.api.body`` (the Agave rules and
messages) and answers rendered by ``airjobs.api.envelope``. So each schema must hold for every answer the
facade can send:

* ``filter=a,b`` may drop any field of a result object, at any depth: result models (``Partial``) list
  their properties and require none. ``naked=true`` sends the bare result: the response types are
  ``<X>Envelope | <X>`` (``anyOf``).
* descriptions of apps and systems are their owners' own JSON: those models allow additional properties
  and only type the fields the service sets or checks.
* the shapes are those of ``airjobs.representation`` (jobs, statuses, history, permissions, output files)
  and of ``airjobs.api.apps``/``systems`` (summaries).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from airjobs.statuses import JobStatus


def _none_required(schema: dict[str, Any]) -> None:
    schema.pop("required", None)


class Partial(BaseModel):
    """A result object: ``filter`` may leave out any of its fields."""

    model_config = ConfigDict(json_schema_extra=_none_required, populate_by_name=True)


class Open(Partial):
    """A result object that may hold any other field (a user's own description)."""

    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------- links


class Href(Partial):
    href: str


class SelfLink(Partial):
    self_: Href = Field(alias="self")


class JobLinks(Partial):
    self_: Href = Field(alias="self")
    app: Href
    executionSystem: Href
    archiveSystem: Href
    archiveData: Href
    owner: Href
    permissions: Href
    history: Href
    metadata: Href
    notifications: Href


class SummaryLinks(Partial):
    self_: Href = Field(alias="self")
    archiveData: Href


class PermissionLinks(Partial):
    self_: Href = Field(alias="self")
    parent: Href
    profile: Href


class FileLinks(Partial):
    self_: Href = Field(alias="self")
    system: Href
    parent: Href


# ---------------------------------------------------------------- jobs (spec §3)


class Job(Partial):
    """The full job (spec §3.1). ``archivePath``/``archiveSystem`` only when it archives, ``message`` only
    when it FAILED, ``exitCode`` once the app's exit code is known."""

    id: str
    name: str
    owner: str
    appId: str
    executionSystem: str
    batchQueue: str | None
    nodeCount: int
    processorsPerNode: int
    memoryPerNode: float = Field(description="GB")
    maxRunTime: str | None = Field(description="HH:MM:SS")
    archive: bool
    retries: int
    localId: str | None = Field(description="The scheduler's job id, or the process id (FORK)")
    created: datetime
    lastUpdated: datetime
    outputPath: str | None = Field(description="The job's work folder on the execution system")
    status: JobStatus
    submitTime: datetime | None
    startTime: datetime | None
    endTime: datetime | None
    inputs: dict[str, Any] = Field(description="input id -> list of values")
    parameters: dict[str, Any] = Field(description="parameter id -> value (or list of values)")
    links: JobLinks = Field(alias="_links")
    archivePath: str | None
    archiveSystem: str | None
    message: str | None
    exitCode: int


class JobSummary(Partial):
    """A job in a listing (spec §3.2); with ``filter`` the listing holds full jobs instead."""

    id: str
    name: str
    owner: str
    executionSystem: str
    appId: str
    created: datetime
    status: JobStatus
    startTime: datetime | None
    endTime: datetime | None
    links: SummaryLinks = Field(alias="_links")


class JobStatusResult(Partial):
    """Spec §3.3."""

    id: str
    status: JobStatus
    links: SelfLink = Field(alias="_links")


class HistoryEvent(Partial):
    """Spec §3.4: ``status`` is a job status or another event (PERMISSION_GRANT, ...); ``progress`` only for
    transfers."""

    status: str
    created: datetime
    createdBy: str | None
    description: str | None
    progress: dict[str, Any]


class PermissionFlags(Partial):
    read: bool
    write: bool


class Permission(Partial):
    """Spec §3.5: only read and write are shown."""

    username: str
    internalUsername: None
    permission: PermissionFlags
    links: PermissionLinks = Field(alias="_links")


class OutputFile(Partial):
    """Spec §3.6: ``path`` is relative to the job's output folder, with a leading ``/``."""

    name: str
    path: str
    lastModified: datetime
    length: int
    permission: str
    mimeType: str
    format: Literal["folder", "unknown"]
    type: Literal["dir", "file"]
    links: FileLinks = Field(alias="_links")


# ---------------------------------------------------------------- apps and systems (spec §11)


class AppSummary(Partial):
    id: str
    name: str | None
    version: str | None
    executionSystem: str | None
    label: Any = None
    shortDescription: Any = None
    isPublic: bool
    links: SelfLink = Field(alias="_links")


class App(Open):
    """A registered app: its description as registered, with the id (``name-version``) and owner the service
    sets."""

    id: str
    owner: str
    name: str
    version: str
    executionSystem: str


class SystemSummary(Partial):
    id: str
    name: str | None
    type: str | None
    description: Any = None
    status: Any = None
    public: bool
    default: bool = Field(description="Whether it is the caller's default system of its type")
    links: SelfLink = Field(alias="_links")


class System(Open):
    """A registered system: its description as registered (inline credentials moved into Connections, named by
    ``connectionId``), with the owner the service sets."""

    id: str
    owner: str
    name: str
    type: Literal["STORAGE", "EXECUTION"]


# ---------------------------------------------------------------- notifications (spec §6)


class NotificationPolicy(Partial):
    retryStrategy: Literal["NONE", "IMMEDIATE", "DELAYED", "EXPONENTIAL"]
    retryLimit: int
    retryRate: int
    retryDelay: int
    saveOnFailure: bool


class NotificationLinks(Partial):
    self_: Href = Field(alias="self")
    attempts: Href
    job: Href
    owner: Href


class Notification(Partial):
    """A subscription to a job's events: a webhook URL or an e-mail address (spec §6.1)."""

    id: str
    owner: str
    url: str
    associatedUuid: str
    event: str
    persistent: bool
    status: Literal["ACTIVE", "INACTIVE"]
    statusReason: str | None
    policy: NotificationPolicy
    attempts: int
    lastSent: datetime | None
    responseCode: int | None
    success: bool | None
    created: datetime
    lastUpdated: datetime
    links: NotificationLinks = Field(alias="_links")


class NotificationAttempt(Partial):
    """One try of a delivery: when, to which URL (macros resolved), the receiver's answer and how long it took."""

    id: str
    notificationId: str
    event: str
    url: str
    startTime: datetime
    responseCode: int | None
    error: str | None
    latencyMs: int
    success: bool


class WebhookSecret(Partial):
    """The owner's signing secrets: ``current`` signs every delivery; after a rotation ``previous`` signs too
    until ``previousExpires``."""

    current: str
    previous: str | None
    previousExpires: datetime | None


class NotificationDescription(BaseModel):
    """A notification to add (spec §6.1): ``associatedUuid`` is the job."""

    url: str = Field(examples=["https://example.org/hook?job=${JOB_ID}&status=${JOB_STATUS}", "me@example.org"])
    event: str = Field(examples=["FINISHED", "*"])
    associatedUuid: str | None = None
    persistent: bool | str | None = None
    policy: dict[str, Any] | None = None


# ---------------------------------------------------------------- envelopes (spec §1.2)

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    """A success: ``result`` is the answer's payload (``null`` for a deletion or an action)."""

    status: Literal["success"]
    message: str | None
    version: str
    result: T


class ErrorEnvelope(BaseModel):
    """Every error: 4xx and 5xx, whatever ``naked``/``filter`` say."""

    status: Literal["error"]
    message: str
    version: str


class JobEnvelope(Envelope[Job]):
    pass


class JobListEnvelope(Envelope[list[JobSummary | Job]]):
    pass


class JobStatusEnvelope(Envelope[JobStatusResult]):
    pass


class HistoryEnvelope(Envelope[list[HistoryEvent]]):
    pass


class PermissionEnvelope(Envelope[Permission]):
    pass


class PermissionListEnvelope(Envelope[list[Permission]]):
    pass


class OutputListEnvelope(Envelope[list[OutputFile]]):
    pass


class AppEnvelope(Envelope[App]):
    pass


class AppListEnvelope(Envelope[list[AppSummary]]):
    pass


class SystemEnvelope(Envelope[System]):
    pass


class SystemListEnvelope(Envelope[list[SystemSummary]]):
    pass


class NotificationEnvelope(Envelope[Notification]):
    pass


class NotificationListEnvelope(Envelope[list[Notification]]):
    pass


class NotificationAttemptListEnvelope(Envelope[list[NotificationAttempt]]):
    pass


class WebhookSecretEnvelope(Envelope[WebhookSecret]):
    pass


class EmptyEnvelope(Envelope[None]):
    pass


# the documented answers: the envelope, or with naked=true its bare result
JobResponse = JobEnvelope | Job
JobListResponse = JobListEnvelope | list[JobSummary | Job]
JobStatusResponse = JobStatusEnvelope | JobStatusResult
HistoryResponse = HistoryEnvelope | list[HistoryEvent]
PermissionResponse = PermissionEnvelope | Permission
PermissionListResponse = PermissionListEnvelope | list[Permission]
OutputListResponse = OutputListEnvelope | list[OutputFile]
AppResponse = AppEnvelope | App
AppListResponse = AppListEnvelope | list[AppSummary]
SystemResponse = SystemEnvelope | System
SystemListResponse = SystemListEnvelope | list[SystemSummary]
EmptyResponse = EmptyEnvelope | None
NotificationResponse = NotificationEnvelope | Notification
NotificationListResponse = NotificationListEnvelope | list[Notification]
NotificationAttemptListResponse = NotificationAttemptListEnvelope | list[NotificationAttempt]
WebhookSecretResponse = WebhookSecretEnvelope | WebhookSecret


class Token(BaseModel):
    """D17: an OAuth2 token response (no envelope)."""

    model_config = ConfigDict(extra="allow")

    token_type: Literal["bearer"]
    scope: str
    access_token: str
    expires_in: int = Field(description="Seconds the access token is valid")
    refresh_token: str | None = Field(default=None, description="For grant_type=refresh_token")


# ---------------------------------------------------------------- request bodies

Scalar = str | int | float | bool | None
Values = Scalar | list[Scalar]


class JobRequest(BaseModel):
    """A job request (spec §4.1). The legacy alias of a field (``jobName``, ``softwareName``, ...) is taken
    when the field itself is not given; null is as if the field were not given; unknown fields are ignored.
    Scalars are taken as text where the field is text (a number as a name is its digits), so the schema is as
    lenient as the service: most checks (an existing app, queue limits, paths) are the service's 400s.
    Values of inputs and parameters: a JSON array, a single value, or a ``;``-separated string (D6)."""

    model_config = ConfigDict(extra="allow")

    name: Any = Field(default=None, description="Required (or jobName): at most 64 characters, trimmed")
    jobName: Any = None
    appId: Any = Field(default=None, description="Required (or softwareName): the app's id, name-version")
    softwareName: Any = None
    executionSystem: Any = Field(default=None, description="If given, the app's execution system")
    executionHost: Any = None
    batchQueue: Any = None
    queue: Any = None
    nodeCount: Any = Field(default=None, description="A positive integer (or its digits)")
    processorsPerNode: Any = None
    processorCount: Any = None
    memoryPerNode: Any = Field(default=None, description="GB, or ###.#[EPTGM]B")
    maxMemory: Any = None
    maxRunTime: Any = Field(default=None, description="HH:MM:SS")
    requestedTime: Any = None
    archive: Any = Field(default=None, description="true or false (default true, D4)")
    archiveSystem: Any = None
    archivePath: str | None = Field(default=None, description="Macros such as ${JOB_ID} are resolved")
    archiveOnAppError: Any = None
    notifications: Any = Field(default=None, description="Notification objects (spec §6.1): url, event, persistent")
    callbackUrl: Any = None
    callbackURL: Any = None
    inputs: dict[str, Values] | None = None
    parameters: dict[str, Values] | None = None


def _text_fields(schema: dict[str, Any]) -> None:
    schema.pop("required", None)
    schema["additionalProperties"] = {"type": "string"}


class Fields(BaseModel):
    """Form fields (text): none is required by the form itself, any other field is taken too."""

    model_config = ConfigDict(json_schema_extra=_text_fields)


class JobForm(Fields):
    """A job request as HTML form fields: the job fields by name, every other field an app input or
    parameter (by its id); no notifications array (use callbackUrl)."""

    name: str = Field(description="Required")
    appId: str = Field(description="Required")
    executionSystem: str
    batchQueue: str
    nodeCount: str
    processorsPerNode: str
    memoryPerNode: str
    maxRunTime: str
    archive: str
    archiveSystem: str
    archivePath: str
    archiveOnAppError: str
    callbackUrl: str


class Upload(Fields):
    """A multipart upload: the JSON document as the file ``fileToUpload`` (what ``jobs-submit -F`` sends);
    without it, the other fields are read as a form."""

    fileToUpload: bytes = Field(json_schema_extra={"contentMediaType": "application/json"})


class JobAction(BaseModel):
    """D2: ``kill``, ``stop`` and ``cancel`` (synonyms), ``hide`` (``delete``), ``restore`` (``unhide``),
    ``resubmit`` (with the options of ``ResubmitOptions``)."""

    action: str = Field(examples=["kill", "stop", "cancel", "hide", "restore", "resubmit"])
    ignoreInputConflicts: bool | str | None = None
    ignoreParameterConflicts: bool | str | None = None
    preserveNotifications: bool | str | None = None


class ResubmitOptions(BaseModel):
    """Spec §7.2 (D10): each defaults as shown."""

    ignoreInputConflicts: bool | str | None = Field(default=True, examples=[True, "false"])
    ignoreParameterConflicts: bool | str | None = Field(default=True, examples=[True, "false"])
    preserveNotifications: bool | str | None = Field(default=False, examples=[False, "true"])


class PermissionGrant(BaseModel):
    """Spec §9.3: a grant replaces the user's previous value; empty or NONE revokes."""

    username: str
    permission: str | None = Field(examples=["READ", "WRITE", "READ_WRITE", "ALL", "NONE"])


class PermissionUpdate(BaseModel):
    permission: str | None = Field(examples=["READ", "WRITE", "READ_WRITE", "ALL", "NONE"])


class AppDescription(BaseModel):
    """An Agave app description (spec §11.1); more fields are kept as they are. The service checks the rest
    (its systems, paths, inputs and parameters: 400s that say what is wrong)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Letters, digits, _ . and -")
    version: str | float = Field(description="Like 1.0 or 2.3.1")
    executionSystem: str
    deploymentPath: str
    templatePath: str = Field(description="The wrapper template, relative to deploymentPath")
    deploymentSystem: str | None = Field(default=None, description="Default: the owner's default storage")
    executionType: Any = Field(default=None, description="HPC, CLI or CONDOR (default: the system's)")
    parallelism: Any = Field(default=None, description="SERIAL (default), PARALLEL or PTHREAD")
    isPublic: Any = Field(default=None, description="true or false; only admins publish")
    inputs: Any = None
    parameters: Any = None
    outputs: Any = None


class SystemDescription(BaseModel):
    """An Agave system description (spec §11.2); credentials may be inline (``login.auth``,
    ``storage.auth``): they are moved into Airflow Connections. The service checks the rest."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="Letters, digits, _ . and -, starting with a letter or digit")
    name: str
    type: str = Field(description="STORAGE or EXECUTION (any case)", examples=["STORAGE", "EXECUTION"])
    storage: dict[str, Any]
    login: Any = Field(default=None, description="EXECUTION systems: host, port, protocol, auth")
    executionType: Any = Field(default=None, description="EXECUTION systems: HPC, CLI or CONDOR")
    scheduler: Any = Field(default=None, description="EXECUTION systems: FORK, SLURM, PBS, SGE, LSF, CONDOR, ...")
    queues: Any = None


class SystemAction(BaseModel):
    """Instead of a description: make the system the caller's default of its type, or stop doing so."""

    action: Literal["setDefault", "unsetDefault"]


class DescriptionForm(Fields):
    """Form fields, taken as the description's top-level string fields."""


class TokenRequest(BaseModel):
    """D17: ``grant_type=password`` (the default: username, password) or ``grant_type=refresh_token``
    (refresh_token); client credentials in Basic auth are accepted and ignored. Values are taken as text;
    other fields are ignored."""

    model_config = ConfigDict(extra="allow")

    grant_type: Literal["password", "refresh_token"] = Field(default="password")
    username: Any = Field(default=None, description="For grant_type=password")
    password: Any = Field(default=None, description="For grant_type=password", json_schema_extra={"format": "password"})
    refresh_token: Any = Field(default=None, description="For grant_type=refresh_token")


class RevokeRequest(BaseModel):
    """RFC 7009: a refresh or an access token (any non-empty value: one unknown or invalid is revoked already).
    Other fields (``token_type_hint``) are ignored."""

    model_config = ConfigDict(extra="allow")

    token: Any = Field(json_schema_extra={"not": {"const": ""}})
