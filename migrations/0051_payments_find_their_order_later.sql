-- Why: a payment whose Razorpay order matches no order of ours is recorded with no order
-- (razorpay_payments.order_id NULL) and, once captured, flagged as an unknown_order mismatch. When
-- the order does turn up later (the storefront's insert committed after Razorpay's webhook, or an
-- order imported afterwards), nothing linked the two: the order stayed pending although paid, the
-- mismatch stayed open, and refund events for that payment stayed deferred for ever (they wait for
-- the payment to have an order). Neither a redelivery nor missed-webhook recovery helped: both see
-- that we already hold the payment's state.
-- Now an order inserted with a razorpay_order_id, or given one later, takes the payments recorded
-- for that Razorpay order without an order (those of its tenant, or of no known tenant, as
-- apply_payment_entity matches them), its payment fields and reconciliation are settled as after a
-- webhook (the unknown_order row becomes matched, or under/over), and the refund webhooks deferred
-- for those payments go back to the workers (woken by NOTIFY). A payment of another tenant is never
-- taken. The trigger's function runs as its owner (security definer), so a tenant inserting its own
-- order through RLS gets the same; nobody may call it otherwise (EXECUTE is checked when a trigger is
-- created, not when it fires, and a trigger function cannot be called directly anyway).
-- depends: 0050_refund_outcomes_are_recovered

create function storeops_private.link_payments_to_new_order()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, storeops, pg_temp
as $$
declare
  v_payment_ids text[];
  v_undeferred integer;
begin
  if new.razorpay_order_id is null then
    return null;
  end if;
  with linked as (
    update storeops.razorpay_payments p
    set order_id = new.id, tenant_id = new.tenant_id
    where p.razorpay_order_id = new.razorpay_order_id and p.order_id is null
      and (p.tenant_id is null or p.tenant_id = new.tenant_id)
    returning p.razorpay_payment_id
  )
  select array_agg(razorpay_payment_id) into v_payment_ids from linked;
  if v_payment_ids is null then
    return null;
  end if;

  perform storeops_private.settle_orders(array[new.id], now());

  update storeops.payment_webhooks
  set deferred_payment_id = null, outcome = null
  where deferred_payment_id = any (v_payment_ids) and not processed;
  get diagnostics v_undeferred = row_count;
  if v_undeferred > 0 then
    perform pg_notify('storeops_webhooks', 'payment');
  end if;
  return null;
end
$$;

comment on function storeops_private.link_payments_to_new_order() is
  'Trigger (orders, after insert or update of razorpay_order_id): takes the payments recorded for that Razorpay order without an order (same tenant or none), settles the order and its reconciliation, and releases refund webhooks deferred for those payments to the workers.';

revoke execute on function storeops_private.link_payments_to_new_order() from public;

create trigger orders_link_payments
  after insert or update of razorpay_order_id on storeops.orders
  for each row
  when (new.razorpay_order_id is not null)
  execute function storeops_private.link_payments_to_new_order();
