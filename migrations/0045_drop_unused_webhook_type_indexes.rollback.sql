-- Back to 0003's and 0004's indexes on (webhook_type, created_at).
create index payment_webhooks_type_created_idx on storeops.payment_webhooks (webhook_type, created_at);
create index shipping_webhooks_type_created_idx on storeops.shipping_webhooks (webhook_type, created_at);
