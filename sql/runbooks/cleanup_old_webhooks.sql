-- Weekly cleanup: deletes payment and shipping webhooks older than 90 days that were processed.
-- Unprocessed webhooks are kept however old, so nothing that still needs attention is lost.
-- Deletes rows for good: to see what it would delete first, run it between begin; and rollback;.
-- Source: enterprise-systems-guide.md, Recommended Scheduled Jobs > 4. Cleanup Old Webhooks (Weekly).
-- Replace: nothing; runs as is.

-- Archive webhooks older than 90 days
DELETE FROM payment_webhooks 
WHERE created_at < NOW() - INTERVAL '90 days'
AND processed = true;

DELETE FROM shipping_webhooks 
WHERE created_at < NOW() - INTERVAL '90 days'
AND processed = true;
