drop table storeops.refunds;
drop table storeops.payment_reconciliation;
drop table storeops.payment_webhooks;
drop table storeops.orders;
