drop function storeops.record_missed_payments(jsonb, uuid, timestamptz);
drop function storeops.record_missed_payment(jsonb, uuid, timestamptz);
