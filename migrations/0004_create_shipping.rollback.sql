drop table storeops.shipping_tracking_updates;
drop table storeops.shipping_webhooks;
drop table storeops.shiprocket_shipments;
