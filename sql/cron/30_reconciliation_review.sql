-- The seed's daily reconciliation review: alert on pending/mismatch rows older than a day.
select cron.schedule('storeops-reconciliation-review', '30 3 * * *',
  $$select storeops.review_reconciliation()$$);
