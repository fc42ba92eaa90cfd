-- Back to 0049: missed-webhook recovery fetches payments only.
drop function if exists storeops.record_refund_check(uuid, jsonb, timestamptz);
drop function if exists storeops.list_refunds_to_recover(interval, interval, integer, timestamptz);
drop index if exists storeops.refunds_to_recover_idx;
alter table storeops.refunds drop column if exists gateway_checked_at;
