-- Back to 0053: a cancelled order holding money is listed nowhere, raises no alert and is never
-- refunded by itself. Refunds already made automatically stay (they are refunds like any other).
drop trigger if exists orders_alert_refund_owed on storeops.orders;
drop function if exists storeops_private.alert_on_refund_owed();
drop view if exists storeops.refunds_owed;
drop index if exists storeops.orders_refund_owed_idx;
drop function if exists storeops.cancelled_order_refund_key(uuid);
alter table storeops.tenants drop column if exists auto_refund_cancelled;
