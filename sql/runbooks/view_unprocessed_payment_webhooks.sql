-- Razorpay webhooks stored but not applied yet (still queued, or failing: see error), newest
-- first, however old. Read-only.
-- Source: enterprise-systems-guide.md, Monitoring & Health Checks > Webhook Monitoring > View Unprocessed Webhooks.
-- Replace: nothing; runs as is.

-- Payment webhooks
SELECT * FROM payment_webhooks 
WHERE processed = false 
ORDER BY created_at DESC;
