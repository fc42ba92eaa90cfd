-- The seed's "Process Retry Queue (every 5 minutes)" for the operations SQL can do alone:
-- re-applying payment and shipping webhooks. Network operations (refunds, DNS) need the runner.
select cron.schedule('storeops-webhook-retries', '*/5 * * * *',
  $$select storeops.run_webhook_retries('pg_cron', 500)$$);
