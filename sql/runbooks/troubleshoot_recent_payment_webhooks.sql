-- Troubleshooting "payment webhooks not processing": the 10 most recent Razorpay webhooks,
-- newest first, processed or not. If nothing recent is here, Razorpay is not reaching us (URL, secret).
-- Read-only.
-- Source: enterprise-systems-guide.md, Troubleshooting > Payment Webhooks Not Processing, step 3.
-- Replace: nothing; runs as is.

SELECT * FROM payment_webhooks ORDER BY created_at DESC LIMIT 10;
