-- Why: orders and everything Razorpay tells us about them. Money is integer minor units (paise)
-- in bigint next to an ISO currency code, never a float. Webhooks are stored raw before anything
-- is applied, keyed by Razorpay's event id, so a redelivery is a no-op and nothing acknowledged
-- is ever lost. Reconciliation and refunds are rows with closed state sets.
-- depends: 0002_create_retry_queue

create table storeops.orders (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null,
  amount bigint not null,
  currency text not null default 'INR',
  -- pending -> paid -> shipped -> delivered; cancelled (payment failed for good, RTO, cancellation).
  status text not null default 'pending',
  -- pending, authorized, captured, failed, partially_refunded, refunded
  payment_status text not null default 'pending',
  razorpay_order_id text,
  razorpay_payment_id text,
  amount_paid bigint not null default 0,
  refund_amount bigint not null default 0,
  paid_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint orders_pkey primary key (id),
  constraint orders_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade,
  constraint orders_amount_not_negative check (amount >= 0),
  constraint orders_amount_paid_not_negative check (amount_paid >= 0),
  constraint orders_refund_amount_within_paid check (refund_amount >= 0 and refund_amount <= greatest(amount_paid, amount)),
  constraint orders_currency_iso check (currency ~ '^[A-Z]{3}$'),
  constraint orders_status_known check (status in ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
  constraint orders_payment_status_known check (
    payment_status in ('pending', 'authorized', 'captured', 'failed', 'partially_refunded', 'refunded')),
  constraint orders_razorpay_order_id_unique unique (razorpay_order_id)
);
comment on table storeops.orders is
  'A storefront order. amount/amount_paid/refund_amount are minor units (paise) of currency; status only moves forward.';
create index orders_tenant_created_idx on storeops.orders (tenant_id, created_at desc);
create index orders_razorpay_payment_id_idx on storeops.orders (razorpay_payment_id) where razorpay_payment_id is not null;
create trigger orders_set_updated_at before update on storeops.orders
  for each row execute function storeops_private.set_updated_at();
select storeops_private.enable_tenant_rls('storeops.orders');

create table storeops.payment_webhooks (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid,
  event_id text not null,
  webhook_type text not null,
  payload jsonb not null,
  processed boolean not null default false,
  processed_at timestamptz,
  error text,
  attempts integer not null default 0,
  created_at timestamptz not null default now(),
  constraint payment_webhooks_pkey primary key (id),
  constraint payment_webhooks_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade,
  constraint payment_webhooks_event_id_unique unique (event_id),
  constraint payment_webhooks_processed_at_when_processed check (not processed or processed_at is not null)
) with (autovacuum_vacuum_scale_factor = 0.02);
comment on table storeops.payment_webhooks is
  'Every Razorpay webhook as received (raw JSON), deduplicated on x-razorpay-event-id (else a body hash). tenant_id is NULL only when no tenant could be resolved.';
create index payment_webhooks_created_idx on storeops.payment_webhooks (created_at desc);
create index payment_webhooks_unprocessed_idx on storeops.payment_webhooks (created_at) where not processed;
create index payment_webhooks_tenant_idx on storeops.payment_webhooks (tenant_id, created_at desc);
create index payment_webhooks_type_created_idx on storeops.payment_webhooks (webhook_type, created_at);
select storeops_private.enable_tenant_rls('storeops.payment_webhooks', 'tenant_id', array['select']);

create table storeops.payment_reconciliation (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid,
  order_id uuid,
  razorpay_order_id text,
  razorpay_payment_id text,
  expected_amount bigint,
  received_amount bigint not null,
  currency text not null default 'INR',
  expected_currency text,
  -- pending: not yet compared; matched; mismatch (see reason); resolved: a person closed it.
  status text not null default 'pending',
  -- under, over, currency, duplicate_capture, unknown_order
  reason text,
  difference bigint generated always as (received_amount - coalesce(expected_amount, 0)) stored,
  notes text,
  reconciled_at timestamptz,
  reconciled_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint payment_reconciliation_pkey primary key (id),
  constraint payment_reconciliation_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade,
  constraint payment_reconciliation_order_fkey foreign key (order_id) references storeops.orders (id) on delete cascade,
  constraint payment_reconciliation_status_known check (status in ('pending', 'matched', 'mismatch', 'resolved')),
  constraint payment_reconciliation_reason_known check (
    reason is null or reason in ('under', 'over', 'currency', 'duplicate_capture', 'unknown_order')),
  constraint payment_reconciliation_mismatch_has_reason check (status <> 'mismatch' or reason is not null),
  constraint payment_reconciliation_amounts_not_negative check (received_amount >= 0 and coalesce(expected_amount, 0) >= 0),
  constraint payment_reconciliation_currency_iso check (currency ~ '^[A-Z]{3}$'),
  constraint payment_reconciliation_payment_unique unique (razorpay_payment_id)
);
comment on table storeops.payment_reconciliation is
  'Expected (order) vs received (Razorpay capture) per payment, in minor units. Mismatches wait for a person to resolve them.';
create index payment_reconciliation_open_idx on storeops.payment_reconciliation (created_at desc)
  where status in ('pending', 'mismatch');
create index payment_reconciliation_tenant_idx on storeops.payment_reconciliation (tenant_id, created_at desc);
create index payment_reconciliation_order_idx on storeops.payment_reconciliation (order_id);
create trigger payment_reconciliation_set_updated_at before update on storeops.payment_reconciliation
  for each row execute function storeops_private.set_updated_at();
select storeops_private.enable_tenant_rls('storeops.payment_reconciliation', 'tenant_id', array['select', 'update']);

create table storeops.refunds (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null,
  order_id uuid not null,
  razorpay_payment_id text,
  razorpay_refund_id text,
  amount bigint not null,
  currency text not null default 'INR',
  reason text,
  -- pending: recorded, Razorpay not yet confirmed; processed; failed.
  status text not null default 'pending',
  -- api: made through create-refund / storeops refund; dashboard: learned from a webhook.
  source text not null default 'api',
  idempotency_key text not null default gen_random_uuid()::text,
  error text,
  processed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint refunds_pkey primary key (id),
  constraint refunds_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade,
  constraint refunds_order_fkey foreign key (order_id) references storeops.orders (id) on delete cascade,
  constraint refunds_amount_positive check (amount > 0),
  constraint refunds_currency_iso check (currency ~ '^[A-Z]{3}$'),
  constraint refunds_status_known check (status in ('pending', 'processed', 'failed')),
  constraint refunds_source_known check (source in ('api', 'dashboard')),
  constraint refunds_razorpay_refund_id_unique unique (razorpay_refund_id),
  constraint refunds_idempotency_key_unique unique (idempotency_key)
);
comment on table storeops.refunds is
  'Refunds in minor units. Recorded pending (with an idempotency key) before Razorpay is called, so a retry never refunds twice.';
create index refunds_order_created_idx on storeops.refunds (order_id, created_at desc);
create index refunds_tenant_idx on storeops.refunds (tenant_id, created_at desc);
create trigger refunds_set_updated_at before update on storeops.refunds
  for each row execute function storeops_private.set_updated_at();
select storeops_private.enable_tenant_rls('storeops.refunds', 'tenant_id', array['select']);

revoke execute on all functions in schema storeops from public;
grant execute on all functions in schema storeops to storeops_runner;
grant execute on function storeops.current_tenant_id() to storeops_tenant;
