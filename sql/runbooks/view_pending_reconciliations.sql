-- Payments still waiting for a person: reconciliations that are pending (not yet compared) or
-- mismatch (received amount or currency differs from the order; see reason and difference, in paise),
-- newest first, all tenants. Matched and resolved rows are not shown. Read-only.
-- Source: enterprise-systems-guide.md, Payment System > Payment Reconciliation > Manual Reconciliation.
-- Replace: nothing; runs as is.

-- View pending reconciliations
SELECT * FROM payment_reconciliation 
WHERE status IN ('pending', 'mismatch')
ORDER BY created_at DESC;
