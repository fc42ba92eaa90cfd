alter function storeops_private.refresh_order_payment_state(uuid[]) reset all;
alter function storeops.delete_processed_webhooks(text, interval, integer, timestamptz) reset all;
