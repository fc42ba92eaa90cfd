-- Troubleshooting "shipping updates not syncing": the 10 most recent Shiprocket webhooks, newest
-- first, processed or not. Read-only.
-- Source: enterprise-systems-guide.md, Troubleshooting > Shipping Updates Not Syncing, step 2.
-- Replace: nothing; runs as is.

SELECT * FROM shipping_webhooks ORDER BY created_at DESC LIMIT 10;
