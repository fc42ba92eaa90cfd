-- Why: migration 0060 makes the Shiprocket webhooks waiting for a shipment fresh again when that
-- shipment is recorded. These four partial indexes find them by what they name: the AWB, the
-- sr_order_id, the order_id as text (a store's own order reference) and the order uuid inside it.
-- They hold only webhooks that failed (not processed, attempts > 0): intake stores webhooks with
-- attempts = 0 and never maintains them.
--
-- Built CONCURRENTLY, outside a transaction (yoyo's transactional: false), so that Shiprocket
-- intake and processing go on while they are built: shipping_webhooks keeps 90 days of webhooks,
-- and a plain CREATE INDEX would hold back every insert into it until the build is over.
-- transactional: false
-- depends: 0058_expiring_certificates_raise_an_alert

create index concurrently if not exists shipping_webhooks_waiting_awb_idx
  on storeops.shipping_webhooks (btrim(payload ->> 'awb'))
  where not processed and attempts > 0;

create index concurrently if not exists shipping_webhooks_waiting_sr_order_idx
  on storeops.shipping_webhooks (btrim(payload ->> 'sr_order_id'))
  where not processed and attempts > 0;

create index concurrently if not exists shipping_webhooks_waiting_order_ref_idx
  on storeops.shipping_webhooks (btrim(payload ->> 'order_id'))
  where not processed and attempts > 0;

create index concurrently if not exists shipping_webhooks_waiting_order_uuid_idx
  on storeops.shipping_webhooks (storeops_private.parse_order_uuid(payload ->> 'order_id'))
  where not processed and attempts > 0;

-- A build interrupted on an earlier try leaves an invalid index that "if not exists" would accept.
do $$
begin
  if exists (select 1 from pg_index i
             join pg_class c on c.oid = i.indexrelid
             join pg_namespace n on n.oid = c.relnamespace
             where n.nspname = 'storeops' and c.relname in ('shipping_webhooks_waiting_awb_idx', 'shipping_webhooks_waiting_sr_order_idx', 'shipping_webhooks_waiting_order_ref_idx', 'shipping_webhooks_waiting_order_uuid_idx') and not i.indisvalid) then
    raise exception 'an index this migration builds is invalid (a concurrent build was interrupted)'
      using hint = 'drop the invalid index (drop index concurrently storeops.<name>), then migrate again';
  end if;
end
$$;
