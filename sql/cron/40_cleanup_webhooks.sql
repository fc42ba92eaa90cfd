-- The seed's weekly cleanup: processed webhooks older than 90 days, in committed batches;
-- unprocessed webhooks are kept however old.
select cron.schedule('storeops-cleanup-webhooks', '0 4 * * 0',
  $$call storeops.cleanup_old_webhooks()$$);
