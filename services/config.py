"""Settings of every parksense process, read from ``PARKSENSE_*`` environment variables."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Self

from psycopg.conninfo import make_conninfo
from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.assignment import Assignment, WorkerSlot


class DatabaseSettings(BaseSettings):
    """Where the PostgreSQL + TimescaleDB database is (``PARKSENSE_DB_*``).

    ``password`` has no default. Unset, the local stack's commands and services use the
    stack's own secret (``services.stack.state_secrets.local_database``); anywhere else
    libpq's defaults apply (``PGPASSWORD``, ``~/.pgpass``), so an external database takes
    ``PARKSENSE_DB_PASSWORD`` or a pgpass file.
    """

    model_config = SettingsConfigDict(env_prefix="PARKSENSE_DB_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=5433, ge=1, le=65535)
    name: str = "parksense"
    user: str = "parksense"
    password: SecretStr | None = None

    def conninfo(self, *, application_name: str = "parksense") -> str:
        """Return a libpq connection string (values quoted as libpq requires)."""
        params: dict[str, str | int] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.name,
            "user": self.user,
            "application_name": application_name,
        }
        if self.password is not None:
            params["password"] = self.password.get_secret_value()
        return make_conninfo("", **params)


class MqttSettings(BaseSettings):
    """Where the MQTT broker is (``PARKSENSE_MQTT_*``)."""

    model_config = SettingsConfigDict(env_prefix="PARKSENSE_MQTT_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None


class BrokerAuthSettings(BaseSettings):
    """How credential changes reach a broker that reads files (``PARKSENSE_BROKER_*``).

    With ``auth_dir`` set (the local stack's Mosquitto), every change of credentials or
    registry renders the broker's password, ACL and subscription files there and reloads
    the broker (SIGHUP to the pid in ``pid_file``) before the call returns. Unset: the
    broker reads the ``mqtt_users`` and ``mqtt_acl`` views itself (EMQX), nothing to do.
    """

    model_config = SettingsConfigDict(env_prefix="PARKSENSE_BROKER_", extra="ignore")

    auth_dir: Path | None = None
    pid_file: Path | None = None
    # How long a change may wait for the broker to confirm its reload.
    reload_timeout_s: float = Field(default=10.0, gt=0, le=120)


class RetentionSettings(BaseSettings):
    """How long data is kept and how often the job runs (``PARKSENSE_RETENTION_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="PARKSENSE_RETENTION_", extra="ignore", populate_by_name=True
    )

    # Raw readings, and so the oldest reading ingest accepts (older ones would land in
    # minutes whose raw rows are gone): one setting for both. PARKSENSE_INGEST_RETENTION_DAYS,
    # ingest's name for it before, is still read when PARKSENSE_RETENTION_RAW_DAYS is unset.
    raw_days: float = Field(
        default=30.0,
        gt=0,
        validation_alias=AliasChoices(
            "PARKSENSE_RETENTION_RAW_DAYS", "PARKSENSE_INGEST_RETENTION_DAYS", "raw_days"
        ),
    )
    # Per-minute roll-ups, park minutes, availability transitions and status events.
    rollup_days: float = Field(default=730.0, gt=0)
    # Refused messages (dead_letters, dead_letter_messages): as long as a stored reading,
    # so that a refusal can be looked into for as long as the data it concerns is there.
    dead_letter_days: float = Field(default=30.0, gt=0)
    # Per-park delivery accounting per minute (delivery_1m): as long as the dead letters,
    # since a delivery report counts refusals from them.
    delivery_days: float = Field(default=30.0, gt=0)
    # Dropping chunks is cheap; hourly keeps at most a day and an hour of extra raw data.
    interval_s: float = Field(default=3600.0, gt=0)
    availability_interval_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.rollup_days < self.raw_days:
            raise ValueError("rollup_days must not be shorter than raw_days")
        return self

    @property
    def raw_keep(self) -> timedelta:
        """How long raw readings are kept."""
        return timedelta(days=self.raw_days)

    @property
    def rollup_keep(self) -> timedelta:
        """How long roll-ups are kept."""
        return timedelta(days=self.rollup_days)

    @property
    def dead_letter_keep(self) -> timedelta:
        """How long dead letters are kept."""
        return timedelta(days=self.dead_letter_days)

    @property
    def delivery_keep(self) -> timedelta:
        """How long per-minute delivery accounting is kept."""
        return timedelta(days=self.delivery_days)


class IngestSettings(BaseSettings):
    """Tuning of the ingest service (``PARKSENSE_INGEST_*``)."""

    model_config = SettingsConfigDict(env_prefix="PARKSENSE_INGEST_", extra="ignore")

    # Must start with "parksense.ingest." (the ingest credential's client-id prefix).
    client_id: str = "parksense.ingest.1"
    # How several workers split the topics (services/core/assignment.py, docs/delivery.md):
    # "parks": worker i of N takes its share of the parks' factories on plain persistent
    # subscriptions, which Mosquitto 2.0 restores after a broker restart; "share": every
    # worker subscribes to the whole root through $share/<share_group>/, for brokers that
    # keep shared subscriptions in the session (EMQX). Unset: share when share_group is
    # set, else parks.
    assignment: Assignment = Assignment.PARKS
    share_group: str | None = None
    # This worker's index (from 1) among ``workers`` (parks assignment). An index above the
    # count owns nothing: a worker being retired drains its session, subscribed to nothing.
    workers: int = Field(default=1, ge=1, le=64)
    worker_index: int = Field(default=1, ge=1, le=64)
    # Rows per COPY at most: larger batches amortise the commit and what each batch adds
    # per device and key (latest values, roll-up pieces: 10,000 rather than 5,000 cost
    # ~3 us less a stored reading); below full load the flush interval decides the size.
    max_batch_rows: int = Field(default=10000, ge=1)
    # Age of the oldest pending message before a flush, whatever the batch size.
    flush_interval_s: float = Field(default=0.2, gt=0, le=60)
    # Batches written at once, each over a database connection of its own: while one
    # batch's rows are copied, others can be, on other cores (a write is mostly the
    # database's work). Batches holding status updates or Sparkplug messages go alone.
    # Issue 10's load, one worker on 2 cores: 1 writer 2.5x the peer, 2 writers 3.1x,
    # 3 writers 3.5x (docs/benchmarks.md, 2026-12-02).
    writers: int = Field(default=3, ge=1, le=16)
    # MQTT 5 Receive Maximum: unacknowledged QoS 1 messages the broker may send us. Four
    # full batches of the benchmark's messages (5 readings each): one is judged and
    # filled while three are written, and each is acknowledged after its commit.
    receive_maximum: int = Field(default=8000, ge=1, le=65535)
    # Messages held in memory (received, not yet committed); beyond it the consumer stops
    # reading the socket and the broker keeps the rest. At most 64 KiB each.
    max_buffered_messages: int = Field(default=8000, ge=1)
    # MQTT keepalive: a broker (or network) gone silent is noticed after about this long,
    # and the broker drops a worker it has not heard from for 1.5 times this long.
    keepalive_s: int = Field(default=30, ge=2, le=600)
    # Persistent session: the broker keeps our queue this long while ingest is away.
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    max_future_s: float = Field(default=300.0, ge=0)
    # Readings older than the raw retention are refused (its one setting: RetentionSettings).
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    registry_refresh_s: float = Field(default=2.0, gt=0)
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0)
    shutdown_deadline_s: float = Field(default=20.0, gt=0)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError("retry_initial_s must not exceed retry_max_s")
        if not self.share_group:
            self.share_group = None
        if "assignment" not in self.model_fields_set and self.share_group:
            self.assignment = Assignment.SHARE
        if self.assignment is Assignment.SHARE and self.share_group is None:
            raise ValueError("assignment share needs share_group")
        if self.assignment is Assignment.PARKS and self.share_group is not None:
            raise ValueError("share_group is used only with assignment share")
        return self

    @property
    def slot(self) -> WorkerSlot:
        """This worker's place among the workers."""
        return WorkerSlot(self.worker_index, self.workers)

    @property
    def retention_days(self) -> float:
        """How old a reading may be before ingest refuses it: the raw retention."""
        return self.retention.raw_days


class ApiSettings(BaseSettings):
    """The HTTP API (``PARKSENSE_API_*``)."""

    model_config = SettingsConfigDict(env_prefix="PARKSENSE_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    stream_interval_s: float = Field(default=2.0, gt=0, le=2.0)
    signal_window_s: int = Field(default=300, ge=10)
    online_timeout_s: int = Field(default=90, ge=1)
    # Bootstrap admin keys, comma-separated: they always work, even with the database away,
    # and are how the first stored key is made over HTTP. Keys made with `parksense keys
    # create` or POST /v1/keys live (hashed) in the database. With neither, the API is open
    # to trusted hosts only (see trusted_hosts).
    api_keys: SecretStr = SecretStr("")
    # Host header values accepted, comma-separated (a port is ignored; "*.example.com"
    # matches subdomains; "*" any host). Empty: the bind address, localhost and 127.0.0.1.
    # Refusing other Host values stops DNS-rebinding pages from reaching the API.
    trusted_hosts: str = ""
    # Origins allowed cross-origin (CORS), comma-separated; empty: CORS is off.
    cors_origins: str = ""
    # Dashboard sessions: lifetime, and whether the cookie is sent over HTTPS only (set it
    # when a TLS proxy is in front; the cookie is always Secure on an https request).
    session_ttl_s: int = Field(default=12 * 3600, ge=60, le=30 * 86400)
    session_cookie_secure: bool = False
    # Fleet uploads (PUT /v1/fleet): the body size and the YAML node count allowed. 100,000
    # devices take about 6 MB and 570,000 nodes; the defaults leave room for thresholds.
    fleet_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    fleet_max_nodes: int = Field(default=4_000_000, ge=100)
    # Server limits (uvicorn): connections and requests in flight beyond which new ones get
    # 503; seconds a new connection has to send its request headers; idle keep-alive; how
    # long SIGTERM waits for open requests (live streams are closed at once).
    max_concurrency: int = Field(default=1000, ge=10)
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    keep_alive_s: int = Field(default=5, ge=1, le=300)
    shutdown_grace_s: int = Field(default=3, ge=0, le=60)

    def key_list(self) -> list[str]:
        """The configured bootstrap admin keys."""
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]

    def trusted_host_list(self) -> list[str]:
        """The Host values accepted (lower case, without port)."""
        configured = [h.strip().lower() for h in self.trusted_hosts.split(",") if h.strip()]
        return configured or sorted({self.host.lower(), "localhost", "127.0.0.1"})

    def cors_origin_list(self) -> list[str]:
        """The origins allowed cross-origin (none: CORS off)."""
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


class ReorderSettings(BaseSettings):
    """Closed chunks rewritten in device order by maintenance (``PARKSENSE_MAINTENANCE_REORDER_*``).

    See ``services/storage/chunk_order.py``: each run rewrites up to ``max_chunks`` chunks of
    each of ``readings_1m`` and ``readings`` whose range ended at least ``margin_s`` ago.
    """

    model_config = SettingsConfigDict(env_prefix="PARKSENSE_MAINTENANCE_REORDER_", extra="ignore")

    # How often the job looks for closed chunks; a day brings one new raw chunk and a week
    # one roll-up chunk, so ten minutes catches up on a backlog soon enough.
    interval_s: float = Field(default=600.0, gt=0, le=86_400)
    # A chunk is closed once its range ended this long ago: late data landing after the
    # rewrite is appended out of order (and not rewritten again), so wait past most of it.
    margin_s: float = Field(default=3600.0, ge=0, le=30 * 86_400)
    # Chunks per table per run, each its own transaction holding an ACCESS EXCLUSIVE lock on
    # that chunk while it is rewritten (about a minute for a 500 MB raw chunk); 0: off.
    max_chunks: int = Field(default=1, ge=0, le=100)
    # How long a run waits to lock a chunk (SQLSTATE 55P03 past it: tried at the next run).
    lock_timeout_s: float = Field(default=5.0, gt=0, le=60)

    @property
    def margin(self) -> timedelta:
        """How long ago a chunk's range must have ended for it to be rewritten."""
        return timedelta(seconds=self.margin_s)


class MaintenanceSettings(BaseSettings):
    """The maintenance process: roll-up folding, the availability job (``PARKSENSE_MAINTENANCE_*``).

    Retention has its own settings (``RetentionSettings``, ``PARKSENSE_RETENTION_*``), which
    ingest reads too; so does the chunk reorder job (``ReorderSettings``,
    ``PARKSENSE_MAINTENANCE_REORDER_*``).
    """

    model_config = SettingsConfigDict(env_prefix="PARKSENSE_MAINTENANCE_", extra="ignore")

    # How often committed dirty keys are folded into the roll-ups: the roll-ups' lag behind
    # commit is about this plus one fold (readers stay exact meanwhile; see signals.md).
    fold_interval_s: float = Field(default=1.0, gt=0, le=60)
    # The online rule's timeout for the availability job; the same as the API's.
    online_timeout_s: int = Field(default=90, ge=1)
    # Prometheus metrics (fold lag, keys folded) on 127.0.0.1; None: off.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Closed chunks rewritten in device order, beside availability and retention.
    reorder: ReorderSettings = Field(default_factory=ReorderSettings)


class SharingSettings(BaseSettings):
    """Park signals shared on MQTT by the maintenance process (``PARKSENSE_SHARING_*``).

    They are shared when the process has an MQTT credential (``PARKSENSE_MQTT_USERNAME``,
    the platform role ``maintenance``); see docs/sharing.md.
    """

    model_config = SettingsConfigDict(env_prefix="PARKSENSE_SHARING_", extra="ignore")

    # Each park's signals are published at least this often (PRODUCT.md: every 10 s); a
    # check runs every check_interval_s, so the longest gap is about their sum.
    republish_interval_s: float = Field(default=5.0, gt=0, le=9)
    # How often the leader computes every park's signals to see a device enter or leave
    # alarm: the delay of an alarm on MQTT is about this plus ingest's commit.
    check_interval_s: float = Field(default=1.0, gt=0, le=1)
    # How often a standby process tries to take the lead.
    standby_poll_s: float = Field(default=1.0, gt=0, le=30)
    # The window W of the shared signals; the same as the API's default.
    signal_window_s: int = Field(default=300, ge=10, le=86_400)


class StackSettings(BaseSettings):
    """The local stack started by ``parksense up`` (``PARKSENSE_*``)."""

    model_config = SettingsConfigDict(env_prefix="PARKSENSE_", extra="ignore")

    state_dir: Path = Path(".state")
    ingest_workers: int = Field(default=1, ge=1, le=16)
    ingest_metrics_base_port: int = Field(default=9108, ge=1, le=65535)
