-- Back to 0058: no indexes over the failed Shiprocket webhooks (dropped concurrently, as they were built).
select 'nothing to undo: the check that the indexes are valid';

drop index concurrently if exists storeops.shipping_webhooks_waiting_order_uuid_idx;
drop index concurrently if exists storeops.shipping_webhooks_waiting_order_ref_idx;
drop index concurrently if exists storeops.shipping_webhooks_waiting_sr_order_idx;
drop index concurrently if exists storeops.shipping_webhooks_waiting_awb_idx;
