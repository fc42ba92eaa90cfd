drop index storeops.shipping_webhooks_fresh_idx;
drop index storeops.shiprocket_shipments_poll_due_idx;
drop index storeops.shiprocket_shipments_channel_order_idx;
comment on column storeops.shiprocket_shipments.last_event_at is null;
alter table storeops.shiprocket_shipments drop column is_terminal;
drop table storeops.shiprocket_status_codes;
