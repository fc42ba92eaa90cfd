-- Troubleshooting "shipping updates not syncing": the 10 latest tracking scans over all
-- shipments, by scan time. Read-only.
-- Source: enterprise-systems-guide.md, Troubleshooting > Shipping Updates Not Syncing, step 3.
-- Replace: nothing; runs as is.

SELECT * FROM shipping_tracking_updates ORDER BY timestamp DESC LIMIT 10;
