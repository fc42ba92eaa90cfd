-- Why: Shiprocket tells us where a parcel is through webhooks (and, when those stop, through its
-- tracking API). Every scan is kept once, in order, so the history is complete; the shipment keeps
-- its current status, and the order follows it forward only.
-- depends: 0003_create_payments

create table storeops.shiprocket_shipments (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null,
  order_id uuid not null,
  awb text,
  sr_order_id text,
  channel_order_id text,
  courier_name text,
  status text not null default 'NEW',
  status_code integer,
  is_return boolean not null default false,
  last_event_at timestamptz,
  last_polled_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint shiprocket_shipments_pkey primary key (id),
  constraint shiprocket_shipments_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade,
  constraint shiprocket_shipments_order_fkey foreign key (order_id) references storeops.orders (id) on delete cascade,
  constraint shiprocket_shipments_awb_unique unique (awb),
  constraint shiprocket_shipments_awb_not_blank check (awb is null or btrim(awb) <> '')
);
comment on table storeops.shiprocket_shipments is
  'A Shiprocket shipment of an order, found by AWB (else sr_order_id / channel order id). status is the latest Shiprocket status text.';
create index shiprocket_shipments_order_idx on storeops.shiprocket_shipments (order_id);
create index shiprocket_shipments_tenant_idx on storeops.shiprocket_shipments (tenant_id, created_at desc);
create index shiprocket_shipments_sr_order_idx on storeops.shiprocket_shipments (sr_order_id) where sr_order_id is not null;
create index shiprocket_shipments_stale_idx on storeops.shiprocket_shipments (coalesce(last_event_at, created_at))
  where awb is not null;
create trigger shiprocket_shipments_set_updated_at before update on storeops.shiprocket_shipments
  for each row execute function storeops_private.set_updated_at();
select storeops_private.enable_tenant_rls('storeops.shiprocket_shipments');

create table storeops.shipping_webhooks (
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
  constraint shipping_webhooks_pkey primary key (id),
  constraint shipping_webhooks_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade,
  constraint shipping_webhooks_event_id_unique unique (event_id),
  constraint shipping_webhooks_processed_at_when_processed check (not processed or processed_at is not null)
) with (autovacuum_vacuum_scale_factor = 0.02);
comment on table storeops.shipping_webhooks is
  'Every Shiprocket tracking webhook as received, deduplicated on awb + shipment_status_id + current_timestamp.';
create index shipping_webhooks_created_idx on storeops.shipping_webhooks (created_at desc);
create index shipping_webhooks_unprocessed_idx on storeops.shipping_webhooks (created_at) where not processed;
create index shipping_webhooks_tenant_idx on storeops.shipping_webhooks (tenant_id, created_at desc);
create index shipping_webhooks_type_created_idx on storeops.shipping_webhooks (webhook_type, created_at);
select storeops_private.enable_tenant_rls('storeops.shipping_webhooks', 'tenant_id', array['select']);

create table storeops.shipping_tracking_updates (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null,
  shipment_id uuid not null,
  status text not null,
  status_code integer,
  location text,
  activity text,
  "timestamp" timestamptz not null,
  source text not null default 'webhook',
  unknown_status boolean not null default false,
  created_at timestamptz not null default now(),
  constraint shipping_tracking_updates_pkey primary key (id),
  constraint shipping_tracking_updates_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade,
  constraint shipping_tracking_updates_shipment_fkey foreign key (shipment_id)
    references storeops.shiprocket_shipments (id) on delete cascade,
  constraint shipping_tracking_updates_source_known check (source in ('webhook', 'poll', 'manual')),
  constraint shipping_tracking_updates_once unique nulls not distinct (shipment_id, "timestamp", status, location)
);
comment on table storeops.shipping_tracking_updates is
  'Tracking history: each scan and status once, timestamps parsed from IST. unknown_status flags codes we do not map.';
create index shipping_tracking_updates_shipment_time_idx on storeops.shipping_tracking_updates (shipment_id, "timestamp" desc);
create index shipping_tracking_updates_time_idx on storeops.shipping_tracking_updates ("timestamp" desc);
create index shipping_tracking_updates_tenant_idx on storeops.shipping_tracking_updates (tenant_id);
select storeops_private.enable_tenant_rls('storeops.shipping_tracking_updates', 'tenant_id', array['select']);

revoke execute on all functions in schema storeops from public;
grant execute on all functions in schema storeops to storeops_runner;
grant execute on function storeops.current_tenant_id() to storeops_tenant;
