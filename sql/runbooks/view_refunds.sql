-- Every refund of one order, newest first: amount (paise), status (pending, processed, failed),
-- reason and the Razorpay refund id. Read-only.
-- Source: enterprise-systems-guide.md, Payment System > Refund Processing > View Refunds.
-- Replace: 'order-uuid' with the order's id (orders.id).

SELECT * FROM refunds 
WHERE order_id = 'order-uuid' 
ORDER BY created_at DESC;
