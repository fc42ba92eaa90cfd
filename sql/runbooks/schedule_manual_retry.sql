-- Schedule a retry of one failed operation by hand. The n-th call for the same live operation
-- sets next_retry_at to now + 5 min x 2^(n-1) (5, 10, 20, 40, 80 minutes); after max_attempts the row is
-- marked failed. Calling it again never duplicates the row. Returns the queue row.
-- Source: enterprise-systems-guide.md, Retry Queue System > Manual Retry.
-- Replace: 'tenant-uuid' with the tenant's id (tenants.id), 'webhook-uuid' with the id of the
-- operation to retry (here a payment_webhooks.id), and "uuid" in the payload with the same webhook id;
-- 'Error message' with why it is being retried.

-- Schedule a retry manually
SELECT schedule_operation_retry(
  'tenant-uuid',
  'payment_webhook',
  'webhook-uuid',
  '{"webhook_id": "uuid"}'::jsonb,
  'Error message'
);
