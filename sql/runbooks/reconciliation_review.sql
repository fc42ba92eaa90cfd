-- Daily review: reconciliations still pending or mismatched more than a day after they were
-- created, i.e. the ones nobody has looked at. Read-only.
-- Source: enterprise-systems-guide.md, Recommended Scheduled Jobs > 3. Reconciliation Review (Daily).
-- Replace: nothing; runs as is.

-- Review pending reconciliations
SELECT * FROM payment_reconciliation 
WHERE status IN ('pending', 'mismatch')
AND created_at < NOW() - INTERVAL '1 day';
