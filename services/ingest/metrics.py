"""Prometheus metrics of the ingest service: every path that drops or refuses counts."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter(
    "parksense_ingest_messages_received", "MQTT messages handed to the pipeline"
)
MESSAGES_DELIVERED = Counter(
    "parksense_ingest_messages_delivered",
    "PUBLISH packets delivered by the broker (counted on the network thread)",
)
MESSAGES_ACKED = Counter("parksense_ingest_messages_acked", "PUBACKs sent after commit")
READINGS_RECEIVED = Counter(
    "parksense_ingest_readings_received", "Readings accepted by validation, before storage"
)
READINGS_STORED = Counter("parksense_ingest_readings_stored", "Readings inserted")
READINGS_DUPLICATE = Counter(
    "parksense_ingest_readings_duplicate", "Readings already stored (redelivery), not inserted"
)
REFUSED = Counter(
    "parksense_ingest_refused",
    "Readings or messages refused and written to the dead letters, by reason",
    ["reason"],
)
DEAD_LETTERS_MINIMAL = Counter(
    "parksense_ingest_dead_letters_minimal",
    "Dead letters the database refused, stored instead as reason, topic and payload only",
)
DEAD_LETTERS_UNSTORABLE = Counter(
    "parksense_ingest_dead_letters_unstorable",
    "Refused messages not even a minimal dead letter could record: logged and acknowledged",
)
STATUS_UPDATES = Counter("parksense_ingest_status_updates", "Device status messages stored")
SPARKPLUG_REBIRTHS = Counter(
    "parksense_ingest_sparkplug_rebirths",
    "Sparkplug B Rebirth requests published to edge nodes (NCMD)",
)
ACKS_SKIPPED = Counter(
    "parksense_ingest_acks_skipped",
    "Committed messages not acknowledged because their connection dropped (redelivered)",
)
DB_RETRIES = Counter("parksense_ingest_db_retries", "Batch writes retried after a storage error")
BUFFER_MESSAGES = Gauge(
    "parksense_ingest_buffer_messages", "Messages received and not yet acknowledged"
)
BUFFER_LIMIT = Gauge(
    "parksense_ingest_buffer_limit", "The most messages held before the consumer pushes back"
)
BUFFER_PEAK = Gauge("parksense_ingest_buffer_peak", "The most messages ever held at once")
BACKPRESSURE_SECONDS = Counter(
    "parksense_ingest_backpressure_seconds",
    "Time the network thread did not read for lack of buffer space (the broker held the rest)",
)
CONNECTIONS = Counter(
    "parksense_ingest_connections", "Connections accepted by the broker (the first one included)"
)
PARKED = Gauge(
    "parksense_ingest_parked",
    "1 while disconnected from the broker because the buffer stayed full, else 0",
)
SUBSCRIBED = Gauge(
    "parksense_ingest_subscribed",
    "1 once the broker has answered every subscription of this connection, else 0",
)
SUBSCRIBED_FILTERS = Gauge(
    "parksense_ingest_subscribed_filters",
    "Topic filters this worker holds (its parks' filters, or the root's)",
)
SUBSCRIPTIONS_REFUSED = Counter(
    "parksense_ingest_subscriptions_refused",
    "Topic filters the broker refused in a SUBACK (their messages would go unseen)",
)
DEGRADED = Gauge("parksense_ingest_degraded", "1 while the database refuses writes, else 0")
REGISTRY_VERSION = Gauge("parksense_ingest_registry_version", "Fleet version in use")
MESSAGES_REJUDGED = Counter(
    "parksense_ingest_messages_rejudged",
    "Messages judged again at flush because a fleet load committed after they were judged",
)
BATCH_ROWS = Histogram(
    "parksense_ingest_batch_rows",
    "Rows per committed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
)
COMMIT_SECONDS = Histogram(
    "parksense_ingest_commit_seconds",
    "Time to write and commit one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COMMIT_LAG = Histogram(
    "parksense_ingest_commit_lag_seconds",
    "Commit time minus measured time, for readings measured in the last hour",
    buckets=(
        0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75,
        0.9, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 3600,
    ),
)  # fmt: skip
