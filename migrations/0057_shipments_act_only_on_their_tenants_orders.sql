-- Why: two ways for one store to move another store's order.
--
-- 1. A tenant may insert and update its own shiprocket_shipments rows (RLS checks tenant_id), and the
--    foreign key on order_id ignores RLS. So a store could record a shipment of its own pointing at
--    another store's order, post a tracking event for it with its own token, and the other store's
--    order became delivered, or cancelled (then owing a refund, refunded automatically when that
--    store has opted in). A shipment's order must now belong to the shipment's tenant (SO403).
--    The check reads orders as the table owner (security definer), since under RLS the tenant
--    cannot see the order it would be pointing at.
--
-- 2. A Shiprocket webhook on the URL without a tenant is checked against the platform token when
--    intake cannot tell whose it is, and stored without a tenant; processing then finds the tenant
--    by AWB, sr_order_id or our order uuid. Every store using the platform token knows it (it is
--    typed into its Shiprocket panel), so it could post an event naming another store's AWB or
--    order uuid. For a store with its own token that is a forgery: its events must carry its token.
--    Such a webhook is now not applied (SO403, recorded on the row and retried as any failure,
--    then an operation_failed alert). Stores without their own token share the platform token by
--    design.
--
-- Shipments already pointing at another tenant's order are not changed here: one summary alert
-- (shipment_order_mismatch, no tenant) counts them and names up to 20, for a person to look at.
-- depends: 0056_domain_state_is_written_by_checks_only

set local lock_timeout = '10s';

-- The audit first: it reads shipments and orders before this migration takes the triggers' locks
-- (SHARE ROW EXCLUSIVE, held to the end), so intake and processing wait only for the DDL itself.
do $$
declare
  v_count bigint;
begin
  select count(*) into v_count
  from storeops.shiprocket_shipments s
  join storeops.orders o on o.id = s.order_id
  where o.tenant_id <> s.tenant_id;
  if v_count > 0 then
    perform storeops.raise_alert('shipment_order_mismatch', null, jsonb_build_object(
      'shipments', v_count,
      'sample', (select jsonb_agg(jsonb_build_object('shipment_id', x.id, 'tenant_id', x.tenant_id,
                                                     'order_id', x.order_id, 'order_tenant_id', x.order_tenant_id))
                 from (select s.id, s.tenant_id, s.order_id, o.tenant_id as order_tenant
                       from storeops.shiprocket_shipments s
                       join storeops.orders o on o.id = s.order_id
                       where o.tenant_id <> s.tenant_id
                       limit 20) x(id, tenant_id, order_id, order_tenant_id)),
      'note', 'shipments recorded before migration 0057 that point at another tenant''s order: tracking events for them still move that order'));
  end if;
end
$$;

create function storeops_private.check_shipment_order_tenant()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_owner uuid;
begin
  select o.tenant_id into v_owner from storeops.orders o where o.id = new.order_id;
  if found and v_owner is distinct from new.tenant_id then
    raise exception 'order % belongs to another tenant', new.order_id
      using errcode = 'SO403', hint = 'a shipment is recorded by the tenant that owns its order';
  end if;
  return new;
end
$$;

revoke execute on function storeops_private.check_shipment_order_tenant() from public;

comment on function storeops_private.check_shipment_order_tenant() is
  'A shipment''s order must belong to the shipment''s tenant (SO403); reads orders as the owner, past RLS.';

create trigger shiprocket_shipments_order_of_same_tenant
  before insert or update of tenant_id, order_id on storeops.shiprocket_shipments
  for each row
  execute function storeops_private.check_shipment_order_tenant();

create function storeops_private.check_platform_token_scope()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- The tenant had its own token when the webhook came in (a webhook received before the store set
  -- one up was rightly checked against the platform's).
  if exists (select 1 from storeops.tenant_secrets s
             where s.tenant_id = new.tenant_id and s.kind = 'shiprocket_webhook'
               and s.created_at <= new.created_at
               and (s.expires_at is null or s.expires_at > new.created_at)) then
    raise exception 'shipping webhook % came in under the platform token, but tenant % has its own Shiprocket token',
      new.id, new.tenant_id
      using errcode = 'SO403',
            hint = 'not applied: that tenant''s events must carry its own token (its per-tenant URL, or the shared URL with its token)';
  end if;
  return new;
end
$$;

revoke execute on function storeops_private.check_platform_token_scope() from public;

comment on function storeops_private.check_platform_token_scope() is
  'A Shiprocket webhook stored without a tenant (checked against the platform token) is not applied to a tenant that had its own token when it came in (SO403).';

create trigger shipping_webhooks_platform_token_scope
  before update of tenant_id on storeops.shipping_webhooks
  for each row
  when (old.tenant_id is null and new.tenant_id is not null)
  execute function storeops_private.check_platform_token_scope();
