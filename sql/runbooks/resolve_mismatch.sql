-- Close one reconciliation by hand after checking it (e.g. with the Razorpay dashboard): marks it
-- resolved with a note, the time and who did it. Changes that one row only; edit the notes text to
-- say what you found.
-- Source: enterprise-systems-guide.md, Payment System > Payment Reconciliation > Manual Reconciliation.
-- Replace: 'user-uuid' with your user id (reconciled_by), 'reconciliation-id' with the
-- payment_reconciliation.id from view_pending_reconciliations.sql.

-- Resolve mismatch
UPDATE payment_reconciliation 
SET status = 'resolved',
    notes = 'Resolved manually',
    reconciled_at = NOW(),
    reconciled_by = 'user-uuid'
WHERE id = 'reconciliation-id';
