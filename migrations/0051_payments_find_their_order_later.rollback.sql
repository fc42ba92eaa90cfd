-- Back to 0050: a payment recorded without an order stays so when the order turns up later.
drop function if exists storeops.link_unlinked_payments(integer, timestamptz);
drop trigger if exists orders_link_payments on storeops.orders;
drop function if exists storeops_private.link_payments_to_new_order();
drop function if exists storeops_private.link_order_payments(storeops.orders, timestamptz);
drop index if exists storeops.razorpay_payments_unlinked_idx;
