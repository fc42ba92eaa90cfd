-- Troubleshooting "payment webhooks not processing": every retry-queue row of payment webhooks
-- in any state (pending, processing, completed, failed), with attempts and last_error. Read-only.
-- Source: enterprise-systems-guide.md, Troubleshooting > Payment Webhooks Not Processing, step 4.
-- Replace: nothing; runs as is.

SELECT * FROM operation_retry_queue WHERE operation_type = 'payment_webhook';
