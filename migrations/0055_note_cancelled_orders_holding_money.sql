-- Why: 0054 notes a cancelled order holding money when it is cancelled (or paid more) from then on;
-- the orders already in that state when it was deployed must be listed too (storeops.refunds_owed),
-- or the backlog a merchant most needs to see would stay hidden. This reads orders without locking
-- them against writes (0054, the DDL, committed before), so ingest and the workers carry on while
-- it scans; an order the triggers note meanwhile is kept as they wrote it. One summary alert, not
-- one per order (thousands at once on a large store). No automatic refund follows for these: a
-- tenant's opt-in (auto_refund_cancelled_since) covers orders noted after it, and orders from
-- before may have been settled outside Razorpay.
-- depends: 0054_cancelled_orders_owe_refunds

with noted as (
  insert into storeops.cancelled_paid_orders (order_id, tenant_id, flagged_at, alerted_paid)
  select o.id, o.tenant_id, now(), o.amount_paid
  from storeops.orders o
  where o.status = 'cancelled' and o.amount_paid > o.refund_amount
  on conflict (order_id) do nothing
  returning order_id
)
select storeops.raise_alert('refund_owed', null, jsonb_build_object(
         'why', 'cancelled orders holding money, found when storeops learned to look for them',
         'orders', count(*), 'list', 'select * from storeops.refunds_owed'))
from noted
having count(*) > 0;
