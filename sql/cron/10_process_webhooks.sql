-- Apply stored webhooks every minute even if no runner is up (the runner applies them within
-- milliseconds when it is; both use the same SQL with SKIP LOCKED, so they never collide).
select cron.schedule('storeops-process-webhooks', '* * * * *',
  $$select storeops.process_payment_webhooks(5000); select storeops.process_shipping_webhooks(5000)$$);
