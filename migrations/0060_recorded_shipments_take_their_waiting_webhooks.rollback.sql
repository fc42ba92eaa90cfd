-- Back to 0059: a webhook that came before its shipment waits on the retry schedule only.
set local lock_timeout = '10s';
comment on column storeops.shipping_webhooks.attempts is null;
drop trigger if exists shiprocket_shipments_wake_waiting_webhooks_on_update on storeops.shiprocket_shipments;
drop trigger if exists shiprocket_shipments_wake_waiting_webhooks on storeops.shiprocket_shipments;
drop function if exists storeops_private.wake_waiting_shipping_webhooks();
