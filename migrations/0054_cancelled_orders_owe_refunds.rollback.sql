-- Back to 0053: a cancelled order holding money is listed nowhere, raises no alert and is never
-- refunded by itself; keys beginning cancelled- are free again. Refunds already made
-- automatically stay (they are refunds like any other).
drop function if exists storeops.prune_cancelled_paid_orders();
drop function if exists storeops.record_auto_refund_failure(uuid, text, timestamptz);
drop trigger if exists refunds_reserved_key on storeops.refunds;
drop function if exists storeops_private.check_reserved_refund_key();
drop trigger if exists orders_alert_refund_owed_on_insert on storeops.orders;
drop trigger if exists orders_alert_refund_owed on storeops.orders;
drop function if exists storeops_private.alert_on_refund_owed();
drop view if exists storeops.refunds_owed;
drop table if exists storeops.cancelled_paid_orders;
drop function if exists storeops.cancelled_order_refund_key(uuid);
alter table storeops.tenants drop column if exists auto_refund_cancelled_since;
