-- Why: Shiprocket identifies a shipment's state by a numeric shipment_status_id (the webhook's
-- current_status_id is a different, courier-level number). What each code means for the shipment
-- (terminal or not) and for the order (shipped, delivered, cancelled) is data, not code: an operator
-- can read it in psql and a new code Shiprocket starts sending can be added with one insert.
-- Codes not in this table are still stored as history, flagged unknown_status, and move nothing.
-- Also: columns and indexes the shipping sync needs on the tables of 0004.
-- depends: 0004_create_shipping

create table storeops.shiprocket_status_codes (
  code integer not null,
  label text not null,
  -- fulfilment: in Shiprocket's warehouse; pre_pickup: booked, not yet with the courier;
  -- in_transit: with the courier going forward; delivered; rto: coming back to the seller;
  -- cancelled; exception: needs a person (lost, damaged, QC failed...).
  category text not null,
  -- What the order becomes (forward only): shipped, delivered, cancelled; NULL: informational.
  order_status text,
  -- Terminal: the shipment's status never changes again (a late scan only adds history).
  is_terminal boolean not null default false,
  -- sample: seen in Shiprocket's official samples; table: the widely copied apidocs table (unverified).
  source text not null default 'table',
  constraint shiprocket_status_codes_pkey primary key (code),
  constraint shiprocket_status_codes_label_upper check (label = upper(label) and btrim(label) <> ''),
  constraint shiprocket_status_codes_category_known check (
    category in ('fulfilment', 'pre_pickup', 'in_transit', 'delivered', 'rto', 'cancelled', 'exception')),
  constraint shiprocket_status_codes_order_status_known check (
    order_status is null or order_status in ('shipped', 'delivered', 'cancelled')),
  constraint shiprocket_status_codes_source_known check (source in ('sample', 'table'))
);
comment on table storeops.shiprocket_status_codes is
  'Shiprocket shipment_status_id -> label, category, the order status it implies (forward only) and terminality. Reference data shared by all tenants; unknown codes are kept as flagged history.';
create unique index shiprocket_status_codes_label_idx on storeops.shiprocket_status_codes (label);

insert into storeops.shiprocket_status_codes (code, label, category, order_status, is_terminal, source) values
  (1, 'AWB ASSIGNED', 'pre_pickup', null, false, 'sample'),
  (3, 'PICKUP GENERATED', 'pre_pickup', null, false, 'sample'),
  (5, 'MANIFEST GENERATED', 'pre_pickup', null, false, 'sample'),
  (6, 'SHIPPED', 'in_transit', 'shipped', false, 'sample'),
  (7, 'DELIVERED', 'delivered', 'delivered', true, 'sample'),
  (8, 'CANCELED', 'cancelled', 'cancelled', true, 'table'),
  (9, 'RTO INITIATED', 'rto', 'cancelled', false, 'table'),
  (10, 'RTO DELIVERED', 'rto', 'cancelled', true, 'table'),
  (12, 'LOST', 'exception', null, false, 'table'),
  (13, 'PICKUP ERROR', 'exception', null, false, 'table'),
  (14, 'RTO ACKNOWLEDGED', 'rto', 'cancelled', false, 'table'),
  (15, 'PICKUP RESCHEDULED', 'pre_pickup', null, false, 'table'),
  (16, 'CANCELLATION REQUESTED', 'pre_pickup', null, false, 'table'),
  (17, 'OUT FOR DELIVERY', 'in_transit', 'shipped', false, 'sample'),
  (18, 'IN TRANSIT', 'in_transit', 'shipped', false, 'sample'),
  (19, 'OUT FOR PICKUP', 'pre_pickup', null, false, 'sample'),
  (20, 'PICKUP EXCEPTION', 'exception', null, false, 'table'),
  (21, 'UNDELIVERED', 'in_transit', 'shipped', false, 'table'),
  (22, 'DELAYED', 'in_transit', 'shipped', false, 'table'),
  (23, 'PARTIAL DELIVERED', 'in_transit', 'shipped', false, 'table'),
  (24, 'DESTROYED', 'exception', null, true, 'table'),
  (25, 'DAMAGED', 'exception', null, false, 'table'),
  (26, 'FULFILLED', 'fulfilment', null, false, 'table'),
  (27, 'PICKUP BOOKED', 'pre_pickup', null, false, 'table'),
  (38, 'REACHED AT DESTINATION HUB', 'in_transit', 'shipped', false, 'sample'),
  (39, 'MISROUTED', 'in_transit', 'shipped', false, 'table'),
  (40, 'RTO NDR', 'rto', 'cancelled', false, 'table'),
  (41, 'RTO OFD', 'rto', 'cancelled', false, 'table'),
  (42, 'PICKED UP', 'in_transit', 'shipped', false, 'sample'),
  (43, 'SELF FULFILLED', 'fulfilment', null, false, 'table'),
  (44, 'DISPOSED OFF', 'exception', null, true, 'table'),
  (45, 'CANCELLED BEFORE DISPATCHED', 'cancelled', 'cancelled', true, 'table'),
  (46, 'RTO IN TRANSIT', 'rto', 'cancelled', false, 'table'),
  (47, 'QC FAILED', 'exception', null, false, 'table'),
  (48, 'REACHED WAREHOUSE', 'in_transit', 'shipped', false, 'table'),
  (49, 'CUSTOM CLEARED', 'in_transit', 'shipped', false, 'table'),
  (50, 'IN FLIGHT', 'in_transit', 'shipped', false, 'table'),
  (51, 'HANDOVER TO COURIER', 'in_transit', 'shipped', false, 'table'),
  (52, 'SHIPMENT BOOKED', 'pre_pickup', null, false, 'table'),
  (54, 'IN TRANSIT OVERSEAS', 'in_transit', 'shipped', false, 'table'),
  (55, 'CONNECTION ALIGNED', 'in_transit', 'shipped', false, 'table'),
  (56, 'REACHED OVERSEAS WAREHOUSE', 'in_transit', 'shipped', false, 'table'),
  (57, 'CUSTOM CLEARED OVERSEAS', 'in_transit', 'shipped', false, 'table'),
  (59, 'BOX PACKING', 'fulfilment', null, false, 'table'),
  (60, 'FC ALLOCATED', 'fulfilment', null, false, 'table'),
  (61, 'PICKLIST GENERATED', 'fulfilment', null, false, 'table'),
  (62, 'READY TO PACK', 'fulfilment', null, false, 'table'),
  (63, 'PACKED', 'fulfilment', null, false, 'table'),
  (67, 'FC MANIFEST GENERATED', 'fulfilment', null, false, 'table'),
  (68, 'PROCESSED AT WAREHOUSE', 'fulfilment', null, false, 'table'),
  (71, 'HANDOVER EXCEPTION', 'exception', null, false, 'table'),
  (72, 'PACKED EXCEPTION', 'exception', null, false, 'table'),
  (75, 'RTO LOCK', 'rto', 'cancelled', false, 'table'),
  (76, 'UNTRACEABLE', 'exception', null, false, 'table'),
  (77, 'ISSUE RELATED TO THE RECIPIENT', 'exception', null, false, 'table'),
  (78, 'REACHED BACK AT SELLER CITY', 'rto', 'cancelled', false, 'table');

-- Reference data without a tenant: everyone reads it, only migrations write it.
alter table storeops.shiprocket_status_codes enable row level security;
revoke all on storeops.shiprocket_status_codes from public;
grant select on storeops.shiprocket_status_codes to storeops_runner, storeops_tenant;
create policy shiprocket_status_codes_runner_select on storeops.shiprocket_status_codes
  for select to storeops_runner using (true);
create policy shiprocket_status_codes_tenant_select on storeops.shiprocket_status_codes
  for select to storeops_tenant using (true);

-- The shipment's current status is terminal (delivered, RTO delivered, cancelled...): polling skips it.
alter table storeops.shiprocket_shipments add column is_terminal boolean not null default false;
comment on column storeops.shiprocket_shipments.is_terminal is
  'The current status is terminal (shiprocket_status_codes.is_terminal): it never changes again and polling skips it.';
comment on column storeops.shiprocket_shipments.last_event_at is
  'Shiprocket''s time (IST, stored as timestamptz) of the event that set the current status.';

-- Lookups by channel order id (our order uuid, or the store''s own order number).
create index shiprocket_shipments_channel_order_idx on storeops.shiprocket_shipments (channel_order_id)
  where channel_order_id is not null;
-- Polling: live shipments with an AWB, by the last time we heard anything (event or poll).
create index shiprocket_shipments_poll_due_idx on storeops.shiprocket_shipments
  (greatest(coalesce(last_event_at, created_at), coalesce(last_polled_at, '-infinity'::timestamptz)))
  where awb is not null and not is_terminal;
-- The worker's queue: first attempts only (failed ones go through the retry queue).
create index shipping_webhooks_fresh_idx on storeops.shipping_webhooks (created_at)
  where not processed and attempts = 0;
