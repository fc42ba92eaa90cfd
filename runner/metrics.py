"""Prometheus metrics (prometheus-client). Queue depth and health come from the database at scrape
time, so every runner reports the same truth; counters are this process's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

WEBHOOKS_RECEIVED = Counter("storeops_webhooks_received_total", "Webhooks accepted and stored",
                            ["provider", "type"], registry=REGISTRY)
WEBHOOKS_REJECTED = Counter("storeops_webhooks_rejected_total", "Webhooks refused with a 4xx/5xx",
                            ["provider", "reason"], registry=REGISTRY)
WEBHOOKS_DUPLICATE = Counter("storeops_webhooks_duplicate_total", "Redeliveries of a stored webhook",
                             ["provider", "type"], registry=REGISTRY)
WEBHOOKS_PROCESSED = Counter("storeops_webhooks_processed_total", "Webhooks applied by the worker",
                             ["provider"], registry=REGISTRY)
OPERATIONS = Counter("storeops_operations_total", "Retry-queue operations run by this worker",
                     ["operation_type", "outcome"], registry=REGISTRY)
ALERTS = Counter("storeops_alerts_total", "Alerts raised", ["kind"], registry=REGISTRY)
PROCESSING_LATENCY = Histogram(
    "storeops_webhook_processing_seconds", "From a webhook being stored to it being applied",
    ["provider"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
INGEST_LATENCY = Histogram(
    "storeops_webhook_ingest_seconds", "From request to durable acknowledgement", ["provider"],
    registry=REGISTRY, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
QUEUE_DEPTH = Gauge("storeops_retry_queue_depth", "Retry queue rows by status and operation type",
                    ["status", "operation_type"], registry=REGISTRY)
QUEUE_OLDEST = Gauge("storeops_retry_queue_oldest_pending_seconds", "Age of the oldest due pending retry",
                     registry=REGISTRY)
WEBHOOK_BACKLOG = Gauge("storeops_webhooks_unprocessed", "Stored webhooks not yet applied", ["provider"],
                        registry=REGISTRY)
HEALTH = Gauge("storeops_health_status", "Last health check per dependency (1 healthy, 0.5 degraded, 0 down)",
               ["check_type"], registry=REGISTRY)
HEALTH_LATENCY = Gauge("storeops_health_response_ms", "Last health check response time", ["check_type"],
                       registry=REGISTRY)
RECON_MISMATCHES = Gauge("storeops_reconciliation_open_mismatches", "Reconciliation rows in mismatch",
                         registry=REGISTRY)
REFUNDS_OWED = Gauge("storeops_refunds_owed_orders", "Cancelled orders still holding money not refunded",
                     ["currency"], registry=REGISTRY)
