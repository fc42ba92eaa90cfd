-- Troubleshooting "domain verification failing": is the domain in the retry queue? Every
-- domain_verify row in any state, with attempts, next_retry_at and last_error. Read-only.
-- Source: enterprise-systems-guide.md, Troubleshooting > Domain Verification Failing, step 3.
-- Replace: nothing; runs as is.

SELECT * FROM operation_retry_queue WHERE operation_type = 'domain_verify';
