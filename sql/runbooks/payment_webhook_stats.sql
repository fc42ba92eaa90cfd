-- Razorpay webhooks received in the last 24 hours, per event type: total, processed, pending.
-- Read-only.
-- Source: enterprise-systems-guide.md, Monitoring & Health Checks > Webhook Monitoring > Webhook Statistics.
-- Replace: nothing; runs as is.

-- Payment webhook stats
SELECT 
  webhook_type,
  COUNT(*) as total,
  COUNT(*) FILTER (WHERE processed = true) as processed,
  COUNT(*) FILTER (WHERE processed = false) as pending
FROM payment_webhooks
WHERE created_at > NOW() - INTERVAL '24 hours'
GROUP BY webhook_type;
