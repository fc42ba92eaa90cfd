-- The seed's weekly cleanup: processed webhooks older than 90 days, in committed batches of 500
-- (the runner's size), each resuming where the last one stopped (0049), pausing after each at least
-- 20 ms and so that deleting takes at most a third of the time (0048, 0049);
-- unprocessed webhooks are kept however old. A table whose old rows another transaction holds
-- is tried 5 times a second apart, then left for next week with a WARNING in the server log (0044).
select cron.schedule('storeops-cleanup-webhooks', '0 4 * * 0',
  $$call storeops.cleanup_old_webhooks()$$);
