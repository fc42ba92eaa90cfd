-- Why: payment_webhooks_type_created_idx and shipping_webhooks_type_created_idx (0003 and 0004,
-- on (webhook_type, created_at)) serve no query. The per-type statistics (the guide's "Webhook
-- Statistics", `storeops status`) filter on created_at alone and read created_idx; no other query
-- filters by type. Yet every stored webhook inserts into them, and every update of a webhook row
-- (processed, attempts, outcome: none of them HOT, since `processed` is in partial-index
-- predicates) inserts again. Measured with 2 clients storing batches of 18 webhooks as intake
-- does, 4 interleaved rounds each: Postgres spent 3.7 µs less CPU per row without the payment
-- table's one by the median (56.5 against 52.8 µs), 6.3 µs by the mean.
-- depends: 0044_cron_cleanup_waits_out_locked_rows

-- A drop waits for an ACCESS EXCLUSIVE lock on its table, and every webhook arriving meanwhile
-- would queue behind it: during a deploy that meets a long transaction, give up after 10 s instead
-- (the migration rolls back whole; run it again later).
set local lock_timeout = '10s';
drop index storeops.payment_webhooks_type_created_idx;
drop index storeops.shipping_webhooks_type_created_idx;
