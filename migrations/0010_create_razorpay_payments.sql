-- Why: Razorpay delivers webhooks at least once, in no particular order, as snapshots of an entity.
-- An order can have many payment attempts, and one payment can fail and later be authorised (late
-- authorisation). So each Razorpay payment gets its own row whose status only moves up a fixed
-- ladder, and the order's payment fields are derived from all of its payments and refunds. Applying
-- the same facts in any order, any number of times, then gives the same rows.
-- This migration adds that table and the columns the state machines need on the 0003 tables:
-- the outcome of each webhook, the payment a refund event is waiting for, and who resolved a
-- reconciliation.
-- depends: 0003_create_payments

create table storeops.razorpay_payments (
  id uuid not null default gen_random_uuid(),
  -- NULL while the payment's order is unknown to us (the reconciliation row says unknown_order).
  tenant_id uuid,
  order_id uuid,
  razorpay_payment_id text not null,
  razorpay_order_id text,
  amount bigint not null,
  currency text not null,
  -- created < failed < authorized < captured < refunded: the highest status seen wins, so a late
  -- payment.failed never undoes a capture, while a late authorisation does lift a failure.
  status text not null,
  method text,
  error_code text,
  error_description text,
  -- Razorpay's own running total from the newest snapshot seen; our refunds table is the ledger.
  amount_refunded bigint not null default 0,
  -- When Razorpay created the payment: orders the attempts of one order the same way every time.
  payment_created_at timestamptz,
  -- Earliest event time that showed each state.
  authorized_at timestamptz,
  captured_at timestamptz,
  failed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint razorpay_payments_pkey primary key (id),
  constraint razorpay_payments_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade,
  constraint razorpay_payments_order_fkey foreign key (order_id) references storeops.orders (id) on delete cascade,
  constraint razorpay_payments_payment_id_unique unique (razorpay_payment_id),
  constraint razorpay_payments_payment_id_format check (razorpay_payment_id ~ '^pay_[A-Za-z0-9]+$'),
  constraint razorpay_payments_status_known check (status in ('created', 'failed', 'authorized', 'captured', 'refunded')),
  constraint razorpay_payments_amount_not_negative check (amount >= 0 and amount_refunded >= 0),
  constraint razorpay_payments_currency_iso check (currency ~ '^[A-Z]{3}$'),
  constraint razorpay_payments_order_has_tenant check (order_id is null or tenant_id is not null)
);
comment on table storeops.razorpay_payments is
  'One row per Razorpay payment attempt, merged from every webhook snapshot: status only moves up created < failed < authorized < captured < refunded. orders are derived from these rows.';
create index razorpay_payments_order_idx on storeops.razorpay_payments (order_id);
create index razorpay_payments_tenant_idx on storeops.razorpay_payments (tenant_id, created_at desc);
create index razorpay_payments_razorpay_order_idx on storeops.razorpay_payments (razorpay_order_id);
create trigger razorpay_payments_set_updated_at before update on storeops.razorpay_payments
  for each row execute function storeops_private.set_updated_at();
select storeops_private.enable_tenant_rls('storeops.razorpay_payments', 'tenant_id', array['select']);

create function storeops_private.payment_status_rank(p_status text) returns integer
language sql immutable parallel safe
as $$
  select case p_status
    when 'pending' then 0 when 'created' then 0
    when 'failed' then 1
    when 'authorized' then 2
    when 'captured' then 3 when 'partially_refunded' then 3 when 'refunded' then 4
  end
$$;
comment on function storeops_private.payment_status_rank(text) is
  'Position on the payment ladder (created < failed < authorized < captured < refunded): the merge keeps the highest, so arrival order does not matter.';

alter table storeops.payment_webhooks
  -- What applying the event did: applied, duplicate (nothing new), stale (an older snapshot than
  -- what we hold), deferred (a refund waiting for its payment), unknown_order, ignored (an event
  -- type we do not act on).
  add column outcome text,
  -- Set while a refund event waits for its payment to reach us; applied when the payment does.
  add column deferred_payment_id text,
  add constraint payment_webhooks_outcome_known check (
    outcome is null or outcome in ('applied', 'duplicate', 'stale', 'deferred', 'unknown_order', 'ignored')),
  add constraint payment_webhooks_deferred_has_payment check (
    outcome is distinct from 'deferred' or deferred_payment_id is not null);
comment on column storeops.payment_webhooks.outcome is
  'What applying it did: applied, duplicate, stale, deferred (stays unprocessed until its payment arrives), unknown_order, ignored.';
comment on column storeops.payment_webhooks.deferred_payment_id is
  'The Razorpay payment a deferred refund event waits for; it is applied the moment that payment is recorded.';
-- The worker's claim: oldest first among rows never attempted and not waiting for a payment.
create index payment_webhooks_claim_idx on storeops.payment_webhooks (created_at, id)
  where not processed and attempts = 0 and deferred_payment_id is null;
create index payment_webhooks_deferred_idx on storeops.payment_webhooks (deferred_payment_id)
  where deferred_payment_id is not null;

alter table storeops.payment_reconciliation
  -- The database role that resolved it, next to reconciled_by (the person's uuid, when known).
  add column reconciled_by_role text,
  add constraint payment_reconciliation_resolved_has_time check (status <> 'resolved' or reconciled_at is not null);
comment on column storeops.payment_reconciliation.reconciled_by_role is
  'Database role that marked the row resolved (filled by a trigger), so who resolved it is known even without a user uuid.';

create index refunds_payment_idx on storeops.refunds (razorpay_payment_id);
create index refunds_pending_match_idx on storeops.refunds (razorpay_payment_id, amount, created_at)
  where status = 'pending' and razorpay_refund_id is null;

create function storeops.get_tenant_for_razorpay_order(p_razorpay_order_id text) returns uuid
language sql stable
as $$
  select tenant_id from storeops.orders where razorpay_order_id = p_razorpay_order_id
$$;
comment on function storeops.get_tenant_for_razorpay_order(text) is
  'Tenant owning a Razorpay order id (order_...), or NULL: how the webhook intake picks a tenant when the URL does not name one.';

revoke execute on all functions in schema storeops from public;
grant execute on all functions in schema storeops to storeops_runner;
grant execute on function storeops.current_tenant_id() to storeops_tenant;
