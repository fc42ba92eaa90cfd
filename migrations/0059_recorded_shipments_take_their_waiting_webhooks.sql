-- Why: a Shiprocket webhook that arrives before its shipment is known here (no shipment with its AWB,
-- sr_order_id or order reference yet) fails, and is retried on the queue's schedule: 5, 10, 20, 40
-- and 80 minutes, then given up. A store that records its AWB three hours late had its DELIVERED
-- event, acknowledged with 200, never applied (only the hourly poll could still mark the order).
-- Now recording a shipment, or giving one its AWB, sr_order_id or channel order id, makes every
-- webhook waiting for it fresh again (attempts back to 0): the workers apply it within a second,
-- however long ago its retries ran out. Waiting means unprocessed and tried at least once, of the
-- shipment's tenant or of no tenant (the platform token's), naming the shipment's AWB, its
-- sr_order_id, or its channel order id or our order uuid as order_id, as apply_tracking_event
-- matches them. A webhook another transaction holds is left to it (SKIP LOCKED).
--
-- Three partial indexes find them; they hold only webhooks that failed, so intake, which stores
-- webhooks with attempts = 0, does not maintain them.
-- depends: 0058_expiring_certificates_raise_an_alert

set local lock_timeout = '10s';

create index shipping_webhooks_waiting_awb_idx on storeops.shipping_webhooks (btrim(payload ->> 'awb'))
  where not processed and attempts > 0;
create index shipping_webhooks_waiting_sr_order_idx on storeops.shipping_webhooks (btrim(payload ->> 'sr_order_id'))
  where not processed and attempts > 0;
create index shipping_webhooks_waiting_order_ref_idx on storeops.shipping_webhooks (btrim(payload ->> 'order_id'))
  where not processed and attempts > 0;

create function storeops_private.wake_waiting_shipping_webhooks()
returns trigger
language plpgsql
security definer  -- a tenant recording its own shipment may not update webhooks itself
set search_path = pg_catalog, pg_temp
as $$
begin
  update storeops.shipping_webhooks w
  set attempts = 0
  where w.id in (
    select x.id from storeops.shipping_webhooks x
    where not x.processed and x.attempts > 0
      and (x.tenant_id is null or x.tenant_id = new.tenant_id)
      and (btrim(x.payload ->> 'awb') = new.awb
           or btrim(x.payload ->> 'sr_order_id') = new.sr_order_id
           or btrim(x.payload ->> 'order_id') = new.channel_order_id
           or btrim(x.payload ->> 'order_id') = new.order_id::text)
    for update skip locked);
  return new;
end
$$;

revoke execute on function storeops_private.wake_waiting_shipping_webhooks() from public;

comment on function storeops_private.wake_waiting_shipping_webhooks() is
  'A shipment recorded (or given its AWB, sr_order_id or channel order id) makes the failed webhooks naming it fresh again (attempts 0), so the workers apply them whatever their retries did.';

create trigger shiprocket_shipments_wake_waiting_webhooks
  after insert on storeops.shiprocket_shipments
  for each row
  execute function storeops_private.wake_waiting_shipping_webhooks();

-- Only when a reference changes: applying a tracking event updates the shipment without changing them.
create trigger shiprocket_shipments_wake_waiting_webhooks_on_update
  after update of awb, sr_order_id, channel_order_id on storeops.shiprocket_shipments
  for each row
  when (new.awb is distinct from old.awb or new.sr_order_id is distinct from old.sr_order_id
        or new.channel_order_id is distinct from old.channel_order_id)
  execute function storeops_private.wake_waiting_shipping_webhooks();

comment on column storeops.shipping_webhooks.attempts is
  'Failed tries since it last became applicable: back to 0 when its shipment is recorded (0059), so a fresh try follows.';
