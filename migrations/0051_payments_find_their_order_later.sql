-- Why: a payment whose Razorpay order matches no order of ours is recorded with no order
-- (razorpay_payments.order_id NULL) and, once captured, flagged as an unknown_order mismatch. When
-- the order does turn up later (the storefront's insert committed after Razorpay's webhook, or an
-- order imported afterwards), nothing linked the two: the order stayed pending although paid, the
-- mismatch stayed open, and refund events for that payment stayed deferred for ever (they wait for
-- the payment to have an order). Neither a redelivery nor missed-webhook recovery helped: both see
-- that we already hold the payment's state.
-- Now storeops_private.link_order_payments(order) takes the payments recorded for the order's
-- Razorpay order without an order, of the order's own tenant only, settles the order and its
-- reconciliation as after a webhook (the unknown_order row becomes matched, or under/over), and
-- applies the refund events deferred for those payments, each in its own subtransaction as
-- apply_payment_entity does. It runs
--   * from a trigger on orders, after insert or update of razorpay_order_id (security definer, so a
--     tenant doing either through RLS gets it too; nobody may call it otherwise: EXECUTE is checked
--     when a trigger is created, not when it fires);
--   * from storeops.link_unlinked_payments(), which the hourly missed-webhook recovery calls: an
--     order inserted in a transaction still open while the payment's webhook was applied (neither
--     sees the other) is linked there.
-- Only the order's own tenant's payments: one recorded with no known tenant (a webhook on the
-- platform's URL whose order could not be found) is left to an operator, since the order's
-- razorpay_order_id is whatever its tenant wrote, and no tenant may claim a payment that way.
-- depends: 0050_refund_outcomes_are_recovered

create index razorpay_payments_unlinked_idx on storeops.razorpay_payments (razorpay_order_id)
  where order_id is null;

create function storeops_private.link_order_payments(p_order storeops.orders, p_now timestamptz default now())
returns integer
language plpgsql
as $$
declare
  v_payment_ids text[];
  v_deferred storeops.payment_webhooks;
begin
  if p_order.razorpay_order_id is null then
    return 0;
  end if;
  with linked as (
    update storeops.razorpay_payments p
    set order_id = p_order.id
    where p.razorpay_order_id = p_order.razorpay_order_id and p.order_id is null
      and p.tenant_id = p_order.tenant_id
    returning p.razorpay_payment_id
  )
  select array_agg(razorpay_payment_id) into v_payment_ids from linked;
  if v_payment_ids is null then
    return 0;
  end if;

  perform storeops_private.settle_orders(array[p_order.id], p_now);
  -- Refund events that waited for these payments to have an order: apply them now, under the
  -- order's lock, each alone (a refund the order's rules refuse fails alone and is retried).
  for v_deferred in
    select * from storeops.payment_webhooks
    where deferred_payment_id = any (v_payment_ids) and not processed
    order by created_at, id
    for update skip locked
  loop
    begin
      perform storeops_private.apply_payment_webhook_row(v_deferred, p_now, true, true);
    exception when others then
      update storeops.payment_webhooks set error = sqlerrm, attempts = attempts + 1 where id = v_deferred.id;
      perform storeops.schedule_operation_retry(v_deferred.tenant_id, 'payment_webhook', v_deferred.id,
        jsonb_build_object('webhook_id', v_deferred.id), sqlerrm, p_now);
    end;
  end loop;
  return cardinality(v_payment_ids);
end
$$;

comment on function storeops_private.link_order_payments(storeops.orders, timestamptz) is
  'Takes the payments recorded for the order''s Razorpay order without an order (the order''s tenant''s only), settles the order and its reconciliation, and applies refund events deferred for them; returns how many payments it took. The caller holds the order row.';

revoke execute on function storeops_private.link_order_payments(storeops.orders, timestamptz) from public;
grant execute on function storeops_private.link_order_payments(storeops.orders, timestamptz) to storeops_runner;

create function storeops_private.link_payments_to_new_order()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, storeops, pg_temp
as $$
begin
  perform storeops_private.link_order_payments(new, now());
  return null;
end
$$;

comment on function storeops_private.link_payments_to_new_order() is
  'Trigger (orders, after insert or update of razorpay_order_id): link_order_payments for the row.';

revoke execute on function storeops_private.link_payments_to_new_order() from public;

create trigger orders_link_payments
  after insert or update of razorpay_order_id on storeops.orders
  for each row
  when (new.razorpay_order_id is not null)
  execute function storeops_private.link_payments_to_new_order();

create function storeops.link_unlinked_payments(p_limit integer default 1000, p_now timestamptz default now())
returns integer
language plpgsql
as $$
declare
  v_order storeops.orders;
  v_linked integer := 0;
begin
  for v_order in
    select o.* from storeops.orders o
    where o.id in (select o2.id from storeops.razorpay_payments p
                   join storeops.orders o2 on o2.razorpay_order_id = p.razorpay_order_id and o2.tenant_id = p.tenant_id
                   where p.order_id is null
                   limit greatest(coalesce(p_limit, 1000), 0))
    for update of o skip locked
  loop
    begin  -- each order alone: one that fails (e.g. a refund rule) keeps no other from being linked
      v_linked := v_linked + storeops_private.link_order_payments(v_order, p_now);
    exception when others then
      raise warning 'link_unlinked_payments: order % could not take its payments: %', v_order.id, sqlerrm;
    end;
  end loop;
  return v_linked;
end
$$;

comment on function storeops.link_unlinked_payments(integer, timestamptz) is
  'Links payments recorded without an order to their order of the same tenant that exists now (one inserted while the payment''s webhook was applied sees neither the other); returns how many payments. Run by the hourly missed-webhook recovery.';
