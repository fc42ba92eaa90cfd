-- Why: an order cancelled after its payment was captured (RTO, a cancellation before dispatch, or a
-- capture that came in after the order was cancelled) kept the customer's money and nobody was told:
-- the reconciliation row says matched (the capture is the order's amount) and the order just reads
-- cancelled. reference/razorpay_shiprocket.md (pitfall 9) has it that such payments need a refund
-- path with a concurrency guard. Now:
--   * a trigger on orders notes each cancelled order holding money (storeops.cancelled_paid_orders)
--     and raises a refund_owed alert: when an order holding money is cancelled, or more money is
--     captured on an order already cancelled;
--   * storeops.refunds_owed lists those that still owe (amount paid less the refunds processed or
--     being made), with the caller's rights: a tenant sees its own. Razorpay's amount_refunded on a
--     payment is not used: it counts refunds still pending, which may yet fail;
--   * a tenant that sets tenants.auto_refund_cancelled_since has the runner refund the orders noted
--     from then on (scheduler job refund_cancelled_orders; not the backlog from before, which may
--     have been settled outside Razorpay), once per order: the refund's idempotency key is
--     derived from the order (storeops.cancelled_order_refund_key) and reserved for it, and
--     request_refund's checks under the order lock (never more than is left) are the guard against
--     a person refunding at the same time. An order it cannot refund waits 1, 2, 4 ... 24 hours
--     before the next try, behind the others; tenants take turns. Off by default: whether an RTO is
--     refunded in full, or less the shipping, is the merchant's call.
-- Nothing new is indexed on orders: an index on a column the apply path changes (status,
-- amount_paid, updated_at) would make every order update a non-HOT one. The noted orders are a
-- table of their own, pruned by the job once refunds were processed; those never refunded stay
-- listed. Orders already cancelled with money when this migration runs are noted by the next one
-- (0055), in its own transaction: this one only changes the schema, holding its locks briefly.
-- depends: 0053_failed_refunds_raise_an_alert

-- Like 0045: during a deploy that meets a long transaction, give up after 10 s instead of queueing
-- every insert (intake's included) behind the wait for these tables' locks.
set local lock_timeout = '10s';

alter table storeops.tenants add column auto_refund_cancelled_since timestamptz;

comment on column storeops.tenants.auto_refund_cancelled_since is
  'Set (e.g. to now()), the runner refunds what each cancelled order noted from then on still holds (storeops.refunds_owed), once per order; NULL: never.';

create function storeops.cancelled_order_refund_key(p_order_id uuid)
returns text
language sql
immutable
parallel safe
as $$
  select 'cancelled-' || p_order_id::text
$$;

comment on function storeops.cancelled_order_refund_key(uuid) is
  'The idempotency key of the automatic refund of a cancelled order: one per order, whoever asks and however often. Keys beginning cancelled- are reserved for it.';

create table storeops.cancelled_paid_orders (
  order_id uuid primary key references storeops.orders (id) on delete cascade,
  tenant_id uuid not null references storeops.tenants (id) on delete cascade,
  flagged_at timestamptz not null default now(),
  alerted_paid bigint not null default 0,
  auto_attempts integer not null default 0,
  auto_error text,
  auto_retry_at timestamptz
);

comment on table storeops.cancelled_paid_orders is
  'Cancelled orders found holding money (by a trigger on orders), the amount paid when last alerted, and the automatic refund''s failed tries. Read storeops.refunds_owed for what is owed.';

create index cancelled_paid_orders_tenant_idx on storeops.cancelled_paid_orders (tenant_id, flagged_at);

select storeops_private.enable_tenant_rls('storeops.cancelled_paid_orders', 'tenant_id', array['select']);

create view storeops.refunds_owed
with (security_invoker = true)
as
select o.tenant_id, o.id as order_id, o.razorpay_order_id, o.currency, o.amount_paid,
       r.processed as refunded,
       r.pending as refund_pending,
       o.amount_paid - r.processed - r.pending as owed,
       c.flagged_at,
       coalesce(c.flagged_at >= t.auto_refund_cancelled_since, false) as auto_refund,
       a.id as auto_refund_id,
       a.status as auto_refund_status,
       c.auto_attempts,
       c.auto_error,
       c.auto_retry_at
from storeops.cancelled_paid_orders c
join storeops.orders o on o.id = c.order_id
join storeops.tenants t on t.id = o.tenant_id
-- The refunds not failed, in the order's currency (a refund in another currency gives back none of
-- it), in bigint as every amount.
cross join lateral (
  select coalesce(sum(x.amount) filter (where x.status = 'processed'), 0)::bigint as processed,
         coalesce(sum(x.amount) filter (where x.status = 'pending'), 0)::bigint as pending
  from storeops.refunds x
  where x.order_id = o.id and x.currency = o.currency
) r
left join storeops.refunds a
  on a.order_id = o.id and a.idempotency_key = storeops.cancelled_order_refund_key(o.id)
where o.status = 'cancelled'
  and o.amount_paid - r.processed - r.pending > 0;

comment on view storeops.refunds_owed is
  'Cancelled orders still holding the customer''s money (minor units): owed = amount_paid - refunds processed or pending in the order''s currency. auto_refund: the runner will refund it (noted since the tenant opted in); auto_refund_id/status: the automatic refund, once made; auto_attempts/error/retry_at: its failed tries.';

grant select on storeops.refunds_owed to storeops_runner, storeops_tenant;

-- Security definer: a tenant cancelling its own order through RLS gets the alert too (raise_alert
-- and cancelled_paid_orders are the runner's); nobody may call it otherwise.
create function storeops_private.alert_on_refund_owed()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, storeops, pg_temp
as $$
declare
  v_committed bigint;
  v_owed bigint;
  v_alerted_paid bigint;
  v_auto boolean;
  v_why text := 'cancelled after its payment was captured';
begin
  -- (The trigger's WHEN: cancelled, and more paid than processed refunds give back.) Noted even when
  -- refunds still pending cover it: one of them may yet fail, and then it is owed again.
  select coalesce(sum(amount), 0)::bigint into v_committed
  from storeops.refunds where order_id = new.id and status <> 'failed' and currency = new.currency;
  v_owed := new.amount_paid - v_committed;
  insert into storeops.cancelled_paid_orders as c (order_id, tenant_id, flagged_at)
  values (new.id, new.tenant_id, now())
  on conflict (order_id) do update set flagged_at = excluded.flagged_at
  returning c.alerted_paid into v_alerted_paid;
  -- An alert when it owes and more was paid than at the last one: none while refunds being made
  -- cover it, none again for the same money (a tenant cancelling and un-cancelling its order), one
  -- more when more is captured (even while the first refund is still pending).
  if v_owed <= 0 or new.amount_paid <= v_alerted_paid then
    return new;
  end if;
  update storeops.cancelled_paid_orders set alerted_paid = new.amount_paid where order_id = new.id;
  if tg_op = 'UPDATE' then
    if old.status = 'cancelled' then
      v_why := 'captured after the order was cancelled';
    end if;
  end if;
  -- Whether the job will refund it: the tenant opted in and no automatic refund was made for it yet.
  select coalesce(t.auto_refund_cancelled_since <= now(), false)
         and not exists (select 1 from storeops.refunds r
                         where r.idempotency_key = storeops.cancelled_order_refund_key(new.id))
  into v_auto
  from storeops.tenants t where t.id = new.tenant_id;
  perform storeops.raise_alert('refund_owed', new.tenant_id, jsonb_build_object(
    'order_id', new.id, 'razorpay_order_id', new.razorpay_order_id, 'currency', new.currency,
    'amount_paid', new.amount_paid, 'refunds_made', v_committed, 'owed', v_owed,
    'auto_refund', coalesce(v_auto, false), 'why', v_why));
  return new;
end
$$;

comment on function storeops_private.alert_on_refund_owed() is
  'A cancelled order holding money not refunded is noted (cancelled_paid_orders) and raises a refund_owed alert: when it is cancelled, and when more is captured on it later.';

revoke execute on function storeops_private.alert_on_refund_owed() from public;

create trigger orders_alert_refund_owed
  after update of status, amount_paid on storeops.orders
  for each row
  when (new.status = 'cancelled' and new.amount_paid > new.refund_amount
        and (old.status is distinct from 'cancelled' or new.amount_paid > old.amount_paid))
  execute function storeops_private.alert_on_refund_owed();

-- An order written already cancelled and paid (an import, a copy from another system).
create trigger orders_alert_refund_owed_on_insert
  after insert on storeops.orders
  for each row
  when (new.status = 'cancelled' and new.amount_paid > new.refund_amount)
  execute function storeops_private.alert_on_refund_owed();

-- The automatic refund's key belongs to its order: nobody (another tenant included) can take it
-- for another refund and so make the job believe the order was refunded.
create function storeops_private.check_reserved_refund_key()
returns trigger
language plpgsql
as $$
begin
  if new.idempotency_key is distinct from storeops.cancelled_order_refund_key(new.order_id) then
    raise exception 'idempotency key % is reserved for the automatic refund of cancelled order %',
      new.idempotency_key, substr(new.idempotency_key, 11)
      using errcode = 'SO400', hint = 'choose a key that does not begin with cancelled-';
  end if;
  return new;
end
$$;

comment on function storeops_private.check_reserved_refund_key() is
  'Idempotency keys beginning cancelled- are the automatic refunds'' of cancelled orders: each only on its own order.';

create trigger refunds_reserved_key
  before insert or update of idempotency_key, order_id on storeops.refunds
  for each row
  when (new.idempotency_key like 'cancelled-%')
  execute function storeops_private.check_reserved_refund_key();

create function storeops.record_auto_refund_failure(p_order_id uuid, p_error text, p_now timestamptz default now())
returns storeops.cancelled_paid_orders
language sql
as $$
  update storeops.cancelled_paid_orders
  set auto_attempts = auto_attempts + 1,
      auto_error = left(p_error, 1000),
      auto_retry_at = p_now + least(interval '1 hour' * power(2, least(auto_attempts, 5)), interval '24 hours')
  where order_id = p_order_id
  returning *
$$;

comment on function storeops.record_auto_refund_failure(uuid, text, timestamptz) is
  'The automatic refund of a cancelled order could not be made: tried again after 1, 2, 4, 8, 16, then every 24 hours, behind the orders not tried yet.';

-- The order rows are locked first (an order being changed meanwhile is skipped, and one changed
-- since the statement began is looked at again as it is now): a capture noting the order again
-- cannot be undone by a prune that saw the order before it.
create function storeops.prune_cancelled_paid_orders()
returns integer
language sql
as $$
  with settled as (
    select o.id
    from storeops.cancelled_paid_orders c
    join storeops.orders o on o.id = c.order_id
    where o.status <> 'cancelled' or o.amount_paid <= o.refund_amount
    for update of o skip locked
  ), gone as (
    delete from storeops.cancelled_paid_orders c
    using settled s
    where c.order_id = s.id
    returning 1
  )
  select count(*)::integer from gone
$$;

comment on function storeops.prune_cancelled_paid_orders() is
  'Forgets the noted cancelled orders whose money went back (processed refunds); one with a refund still pending stays, as it may yet fail.';
