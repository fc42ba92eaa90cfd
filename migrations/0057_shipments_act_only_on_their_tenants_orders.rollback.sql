-- Back to 0056: a shipment may point at any order, and a webhook stored under the platform token is
-- applied to whichever tenant it names. (An alert raised by 0057 stays, as every alert.)
drop trigger if exists shipping_webhooks_platform_token_scope on storeops.shipping_webhooks;
drop function if exists storeops_private.check_platform_token_scope();
drop trigger if exists shiprocket_shipments_order_of_same_tenant on storeops.shiprocket_shipments;
drop function if exists storeops_private.check_shipment_order_tenant();
