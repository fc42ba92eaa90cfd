-- Back to 0052: a failed refund is marked failed and raises no alert.
drop trigger if exists refunds_alert_failed on storeops.refunds;
drop function if exists storeops_private.alert_on_refund_failed();
