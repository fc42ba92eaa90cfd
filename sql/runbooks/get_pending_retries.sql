-- Retries that are due now (and claims whose lease expired), oldest first, at most 100.
-- Read-only: it does not claim them. Runners claim with claim_operation_retries instead.
-- Source: enterprise-systems-guide.md, Retry Queue System > Process Retries.
-- Replace: nothing; runs as is (change 100 to see more or fewer).

-- Get pending retries
SELECT * FROM get_pending_retries(100);

-- Process retry (implement in your application)
-- This would call the appropriate function based on operation_type
