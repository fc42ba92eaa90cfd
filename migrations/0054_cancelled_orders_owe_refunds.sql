-- Why: an order cancelled after its payment was captured (RTO, a cancellation before dispatch, or a
-- capture that came in after the order was cancelled) kept the customer's money and nobody was told:
-- the reconciliation row says matched (the capture is the order's amount) and the order just reads
-- cancelled. reference/razorpay_shiprocket.md (pitfall 9) has it that such payments need a refund
-- path with a concurrency guard. Now:
--   * storeops.refunds_owed lists every cancelled order holding money not yet refunded or being
--     refunded (a view with the caller's rights: a tenant sees its own orders only);
--   * a refund_owed alert is raised when an order holding money is cancelled, or when more money is
--     captured on an order already cancelled;
--   * a tenant that sets tenants.auto_refund_cancelled has the runner refund such orders itself
--     (scheduler job refund_cancelled_orders), once per order: the refund's idempotency key is
--     derived from the order (storeops.cancelled_order_refund_key), and request_refund's checks
--     under the order lock (never more than is left) are the guard against a person refunding at
--     the same time. Off by default: whether an RTO is refunded in full, or less the shipping, is
--     the merchant's call.
-- depends: 0053_failed_refunds_raise_an_alert

alter table storeops.tenants add column auto_refund_cancelled boolean not null default false;

comment on column storeops.tenants.auto_refund_cancelled is
  'When true, the runner refunds what a cancelled order still holds (storeops.refunds_owed), once per order.';

create function storeops.cancelled_order_refund_key(p_order_id uuid)
returns text
language sql
immutable
parallel safe
as $$
  select 'cancelled-' || p_order_id::text
$$;

comment on function storeops.cancelled_order_refund_key(uuid) is
  'The idempotency key of the automatic refund of a cancelled order: one per order, whoever asks and however often.';

-- The cancelled orders holding more than their processed refunds: few at any time, so listing them
-- (the view, the metric at every scrape) reads this small index, not every cancelled order ever.
create index orders_refund_owed_idx on storeops.orders (updated_at)
  where status = 'cancelled' and amount_paid > refund_amount;

create view storeops.refunds_owed
with (security_invoker = true)
as
select o.tenant_id, o.id as order_id, o.razorpay_order_id, o.currency, o.amount_paid,
       r.processed as refunded,
       r.pending as refund_pending,
       o.amount_paid - r.processed - r.pending as owed,
       o.updated_at as order_updated_at,
       t.auto_refund_cancelled as auto_refund,
       a.id as auto_refund_id,
       a.status as auto_refund_status
from storeops.orders o
join storeops.tenants t on t.id = o.tenant_id
left join lateral (
  -- bigint, as every amount here (sum() of bigint would be numeric)
  select coalesce(sum(x.amount) filter (where x.status = 'processed'), 0)::bigint as processed,
         coalesce(sum(x.amount) filter (where x.status = 'pending'), 0)::bigint as pending
  from storeops.refunds x
  where x.order_id = o.id and x.currency = o.currency
) r on true
left join storeops.refunds a on a.idempotency_key = storeops.cancelled_order_refund_key(o.id)
where o.status = 'cancelled'
  and o.amount_paid > o.refund_amount
  and o.amount_paid - r.processed - r.pending > 0;

comment on view storeops.refunds_owed is
  'Cancelled orders still holding the customer''s money (minor units): owed = amount_paid - processed - pending refunds. auto_refund_id/status: the automatic refund, once made.';

grant select on storeops.refunds_owed to storeops_runner, storeops_tenant;

create function storeops_private.alert_on_refund_owed()
returns trigger
language plpgsql
as $$
declare
  v_processed bigint;
  v_pending bigint;
begin
  select coalesce(sum(amount) filter (where status = 'processed'), 0)::bigint,
         coalesce(sum(amount) filter (where status = 'pending'), 0)::bigint
  into v_processed, v_pending
  from storeops.refunds
  where order_id = new.id and currency = new.currency;
  if new.amount_paid - v_processed - v_pending > 0 then
    perform storeops.raise_alert('refund_owed', new.tenant_id, jsonb_build_object(
      'order_id', new.id, 'razorpay_order_id', new.razorpay_order_id, 'currency', new.currency,
      'amount_paid', new.amount_paid, 'refunded', v_processed, 'refund_pending', v_pending,
      'owed', new.amount_paid - v_processed - v_pending,
      'auto_refund', coalesce((select auto_refund_cancelled from storeops.tenants where id = new.tenant_id), false),
      'why', case when old.status = 'cancelled' then 'captured after the order was cancelled'
                  else 'cancelled after its payment was captured' end));
  end if;
  return new;
end
$$;

comment on function storeops_private.alert_on_refund_owed() is
  'A cancelled order holding money not refunded raises a refund_owed alert: when it is cancelled, and when more is captured on it later.';

create trigger orders_alert_refund_owed
  after update of status, amount_paid on storeops.orders
  for each row
  when (new.status = 'cancelled' and new.amount_paid > new.refund_amount
        and (old.status is distinct from 'cancelled' or new.amount_paid > old.amount_paid))
  execute function storeops_private.alert_on_refund_owed();
