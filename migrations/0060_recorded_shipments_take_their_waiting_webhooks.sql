-- Why: a Shiprocket webhook that arrives before its shipment is known here (no shipment with its AWB,
-- sr_order_id or order reference yet) fails, and is retried on the queue's schedule: 5, 10, 20, 40
-- and 80 minutes, then given up. A store that records its AWB three hours late had its DELIVERED
-- event, acknowledged with 200, never applied (only the hourly poll could still mark the order).
--
-- Now recording a shipment, or giving one its AWB, sr_order_id or channel order id, makes the
-- webhooks waiting for it fresh again (attempts back to 0), and the workers apply them within a
-- second, however long ago their retries ran out. Waiting means: not processed, tried at least
-- once, received in the last 30 days (an older event is not news about a shipment recorded today),
-- and naming the shipment as apply_tracking_event would find it:
--   * of the shipment's tenant: by AWB, sr_order_id, the store's channel order id or our order uuid;
--   * of no tenant (stored under the platform token): by AWB or our order uuid only, which are
--     unique; sr_order_id and a store's own order numbers ("1001") are free text any store writes,
--     and one store's new shipment must not pull in another's old events.
-- A pending retry of a woken webhook ends (completed: the webhook is back on the fresh path, which
-- starts a new schedule if it fails again), so a webhook is never both fresh and on the retry queue.
-- A webhook, or a retry, another transaction holds is left to it (SKIP LOCKED); so is a webhook
-- whose retry is being run right now.
-- Security definer: a store recording its own shipment through RLS may not update webhooks itself.
-- The indexes are migration 0059's.
-- depends: 0059_index_waiting_shipping_webhooks

set local lock_timeout = '10s';

create function storeops_private.wake_waiting_shipping_webhooks()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ids uuid[];
begin
  select coalesce(array_agg(x.id), '{}') into v_ids
  from (select w.id from storeops.shipping_webhooks w
        where not w.processed and w.attempts > 0 and w.created_at > now() - interval '30 days'
          and ((btrim(w.payload ->> 'awb') = new.awb and (w.tenant_id is null or w.tenant_id = new.tenant_id))
               or (storeops_private.parse_order_uuid(w.payload ->> 'order_id') = new.order_id
                   and (w.tenant_id is null or w.tenant_id = new.tenant_id))
               or (btrim(w.payload ->> 'sr_order_id') = new.sr_order_id and w.tenant_id = new.tenant_id)
               or (btrim(w.payload ->> 'order_id') = new.channel_order_id and w.tenant_id = new.tenant_id))
        for update of w skip locked) x;
  if cardinality(v_ids) = 0 then
    return new;
  end if;
  update storeops.operation_retry_queue q
  set status = 'completed', completed_at = now(), locked_by = null, locked_until = null,
      errors = errors || jsonb_build_array(jsonb_build_object(
        'at', now(), 'note', 'its shipment was recorded: the webhook is fresh again'))
  where q.id in (select r.id from storeops.operation_retry_queue r
                 join storeops.shipping_webhooks w on w.id = r.operation_id
                 where r.operation_type = 'shipping_webhook' and w.id = any (v_ids)
                   and coalesce(r.tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)
                       = coalesce(w.tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)
                   and r.status = 'pending'
                 for update of r skip locked);
  update storeops.shipping_webhooks w
  set attempts = 0
  where w.id = any (v_ids)
    and not exists (select 1 from storeops.operation_retry_queue r
                    where coalesce(r.tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)
                          = coalesce(w.tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)
                      and r.operation_type = 'shipping_webhook' and r.operation_id = w.id
                      and r.status in ('pending', 'processing'));
  return new;
end
$$;

revoke execute on function storeops_private.wake_waiting_shipping_webhooks() from public;

comment on function storeops_private.wake_waiting_shipping_webhooks() is
  'A shipment recorded (or given its AWB, sr_order_id or channel order id) makes the failed webhooks of the last 30 days naming it fresh again (attempts 0; tenantless ones by AWB or order uuid only) and ends their pending retries.';

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
  'Failed tries since it last became applicable: back to 0 when its shipment is recorded (0060), so a fresh try follows.';
