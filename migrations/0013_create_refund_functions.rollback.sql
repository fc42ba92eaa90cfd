drop function storeops.record_refund_result(uuid, text, text, text, timestamptz);
drop function storeops.request_refund(uuid, uuid, bigint, text, text, timestamptz);
