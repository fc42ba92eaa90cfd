-- Why: a Shiprocket tracking event (a webhook, or a polled tracking result converted to the same
-- shape) is applied in SQL, so the runner, pg_cron and a person in psql get the same result.
-- Events arrive unordered and repeated, so applying one is idempotent and order-independent:
--   * every scan and the status itself are stored once (unique key on shipment, time, status,
--     location), with Shiprocket's IST times ("23 05 2023 11:43:52" or "2023-05-23 11:43:52")
--     parsed to timestamptz;
--   * the shipment's current status is the greatest event by (terminal, event time, code, label),
--     so a late IN TRANSIT after DELIVERED only adds history;
--   * the order only moves forward (pending/paid -> shipped -> delivered | cancelled) and never
--     leaves delivered or cancelled; returns (is_return = 1) never move it.
-- The worker applies batches with process_shipping_webhooks, as process_payment_webhooks does
-- (0011): rows claimed with SKIP LOCKED, their shipments and orders locked in id order, and the
-- events that match a shipment by AWB (nearly all) applied set-based by apply_tracking_events, one
-- statement for a run of events instead of ~8 per event, with the same result as one at a time. A
-- batch that hits an unexpected error is redone with one subtransaction per event, so a bad event
-- only fails itself.
-- depends: 0020_create_shiprocket_status_codes

-- Shiprocket's times carry no zone and are IST. Two formats are in use: current_timestamp is
-- "DD MM YYYY HH:mm:ss", every other date "YYYY-MM-DD HH:mm:ss". NULL for anything else (never fails).
create function storeops_private.parse_shiprocket_time(p_value text) returns timestamptz
language plpgsql stable
as $$
declare
  v_value text := btrim(p_value);
  v_parts text[];
  v_year integer;
  v_month integer;
  v_day integer;
  v_hour integer;
  v_minute integer;
  v_second integer;
  v_zoned boolean := false;
begin
  -- Plain (non-capturing) patterns and string_to_array: capturing regexes cost ~100x more here,
  -- and this runs for every scan of every event.
  if v_value is null then
    return null;
  elsif v_value ~ '^\d{4}-\d\d?-\d\d?[ T]\d\d?:\d\d(:\d\d)?$' then
    v_parts := string_to_array(translate(v_value, '-T:', '   '), ' ');
    v_year := v_parts[1]; v_month := v_parts[2]; v_day := v_parts[3];
  elsif v_value ~ '^\d\d?[ /-]\d\d?[ /-]\d{4}[ T]\d\d?:\d\d(:\d\d)?$' then
    v_parts := string_to_array(translate(v_value, '/-T:', '    '), ' ');
    v_day := v_parts[1]; v_month := v_parts[2]; v_year := v_parts[3];
  elsif v_value ~ '^\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)$' then
    -- ISO 8601 with an explicit offset: trusted as given once the fields are in range.
    v_parts := array[substr(v_value, 1, 4), substr(v_value, 6, 2), substr(v_value, 9, 2),
                     substr(v_value, 12, 2), substr(v_value, 15, 2), '0'];
    v_year := v_parts[1]; v_month := v_parts[2]; v_day := v_parts[3];
    v_zoned := true;
  else
    return null;
  end if;
  v_hour := v_parts[4]; v_minute := v_parts[5]; v_second := coalesce(v_parts[6], '0');
  if v_year < 1 or v_month not between 1 and 12 or v_day < 1 or v_hour > 23 or v_minute > 59 or v_second > 59
     or (v_day > 28 and v_day > extract(day from make_date(v_year, v_month, 1) + interval '1 month - 1 day')) then
    return null;
  end if;
  if v_zoned then
    return v_value::timestamptz;
  end if;
  return make_timestamp(v_year, v_month, v_day, v_hour, v_minute, v_second) at time zone 'Asia/Kolkata';
end
$$;
comment on function storeops_private.parse_shiprocket_time(text) is
  'Shiprocket times are IST without a zone, as "DD MM YYYY HH:mm:ss" (current_timestamp) or "YYYY-MM-DD HH:mm:ss" (scans); NULL when unparseable so one bad date never fails an event.';

-- shipment_status_id / sr-status arrive as numbers or strings ("18", "NA").
create function storeops_private.parse_shiprocket_code(p_value jsonb) returns integer
language sql immutable
as $$
  select case
    when jsonb_typeof(p_value) in ('number', 'string') and btrim(p_value #>> '{}') ~ '^\d{1,9}$'
      then btrim(p_value #>> '{}')::integer
  end
$$;
comment on function storeops_private.parse_shiprocket_code(jsonb) is
  'Shiprocket status codes come as numbers or strings and sometimes "NA": the integer, else NULL.';

-- Labels compared and stored one way: upper case, single spaces ("RTO_NDR" = "rto ndr"); NA is none.
create function storeops_private.normalize_shiprocket_label(p_value text) returns text
language sql immutable
as $$
  select nullif(nullif(upper(regexp_replace(btrim(p_value), '[\s_]+', ' ', 'g')), ''), 'NA')
$$;
comment on function storeops_private.normalize_shiprocket_label(text) is
  'One spelling for status labels (upper case, single spaces, NA -> NULL) so webhook and poll history deduplicate.';

-- Shiprocket echoes our channel order id; when it is our order uuid (optionally "<uuid>_<suffix>").
create function storeops_private.parse_order_uuid(p_value text) returns uuid
language sql immutable
as $$
  select (regexp_match(btrim(p_value),
    '^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?:_.*)?$'))[1]::uuid
$$;
comment on function storeops_private.parse_order_uuid(text) is
  'The order uuid inside a Shiprocket order_id ("<uuid>" or "<uuid>_<suffix>"), else NULL.';

create function storeops.get_tenant_for_awb(p_awb text, p_order_ref text default null) returns uuid
language plpgsql stable
as $$
declare
  v_tenants uuid[];
  v_order_id uuid;
begin
  if nullif(btrim(p_awb), '') is not null then
    select array_agg(distinct s.tenant_id) into v_tenants
    from storeops.shiprocket_shipments s where s.awb = btrim(p_awb);
    if cardinality(v_tenants) = 1 then
      return v_tenants[1];
    end if;
  end if;
  p_order_ref := nullif(btrim(p_order_ref), '');
  if p_order_ref is null then
    return null;
  end if;
  select array_agg(distinct s.tenant_id) into v_tenants
  from storeops.shiprocket_shipments s
  where s.sr_order_id = p_order_ref or s.channel_order_id = p_order_ref;
  if cardinality(v_tenants) = 1 then
    return v_tenants[1];
  elsif cardinality(v_tenants) > 1 then
    -- The same order reference in two tenants: refuse to guess.
    return null;
  end if;
  v_order_id := storeops_private.parse_order_uuid(p_order_ref);
  if v_order_id is not null then
    return (select o.tenant_id from storeops.orders o where o.id = v_order_id);
  end if;
  return null;
end
$$;
comment on function storeops.get_tenant_for_awb(text, text) is
  'Which tenant a Shiprocket webhook belongs to when its URL does not say: by AWB, then sr_order_id / channel order id, then our order uuid. NULL when unknown or ambiguous.';

create function storeops.apply_tracking_event(
  p_tenant_id uuid,
  p_event jsonb,
  p_source text,
  p_now timestamptz default now()
) returns text
language plpgsql
as $$
declare
  v_awb text := nullif(btrim(p_event ->> 'awb'), '');
  v_sr_order_id text := nullif(btrim(p_event ->> 'sr_order_id'), '');
  v_order_ref text := nullif(btrim(p_event ->> 'order_id'), '');
  v_courier text := nullif(btrim(p_event ->> 'courier_name'), '');
  v_scans jsonb := case when jsonb_typeof(p_event -> 'scans') = 'array' then p_event -> 'scans' else '[]'::jsonb end;
  v_order_id uuid;
  v_shipment storeops.shiprocket_shipments;
  v_known storeops.shiprocket_status_codes;
  v_code integer;
  v_status text;
  v_event_at timestamptz;
  v_latest_at timestamptz;
  v_location text;
  v_activity text;
  v_is_return boolean;
  v_newer boolean;
  v_rows integer;
  v_inserted integer := 0;
begin
  if p_tenant_id is null then
    raise exception 'apply_tracking_event: tenant is required' using errcode = '22004';
  end if;
  if p_source is null or p_source not in ('webhook', 'poll', 'manual') then
    raise exception 'apply_tracking_event: source must be webhook, poll or manual, got %', p_source
      using errcode = '22023';
  end if;
  if jsonb_typeof(p_event) is distinct from 'object' then
    raise exception 'apply_tracking_event: the event must be a JSON object' using errcode = '22023';
  end if;

  -- The shipment: by AWB, then sr_order_id, then our order id / channel order id. An event with
  -- an AWB never lands on a shipment that already has a different AWB.
  if v_awb is not null then
    select * into v_shipment from storeops.shiprocket_shipments
    where awb = v_awb and tenant_id = p_tenant_id
    for update;
  end if;
  if v_shipment.id is null and v_sr_order_id is not null then
    select * into v_shipment from storeops.shiprocket_shipments
    where tenant_id = p_tenant_id and sr_order_id = v_sr_order_id and (awb is null or v_awb is null)
    order by created_at desc
    limit 1
    for update;
  end if;
  if v_shipment.id is null and v_order_ref is not null then
    v_order_id := storeops_private.parse_order_uuid(v_order_ref);
    select * into v_shipment from storeops.shiprocket_shipments
    where tenant_id = p_tenant_id and (channel_order_id = v_order_ref or order_id = v_order_id)
      and (awb is null or v_awb is null)
    order by created_at desc
    limit 1
    for update;
  end if;
  v_is_return := storeops_private.parse_shiprocket_code(p_event -> 'is_return') = 1
                 or (p_event -> 'is_return') = 'true'::jsonb;
  if v_shipment.id is null then
    -- Shiprocket created the shipment from our order (its channel order id is our order uuid).
    if v_order_id is not null
       and exists (select 1 from storeops.orders where id = v_order_id and tenant_id = p_tenant_id) then
      insert into storeops.shiprocket_shipments
        (tenant_id, order_id, awb, sr_order_id, channel_order_id, courier_name, is_return)
      values (p_tenant_id, v_order_id, v_awb, v_sr_order_id, v_order_ref, v_courier, coalesce(v_is_return, false))
      returning * into v_shipment;
    else
      raise exception 'no shipment with awb %, sr_order_id % or order_id % for tenant %',
        coalesce(v_awb, '-'), coalesce(v_sr_order_id, '-'), coalesce(v_order_ref, '-'), p_tenant_id
        using errcode = 'P0002',
              hint = 'record the shipment in storeops.shiprocket_shipments (awb, sr_order_id); the event is retried';
    end if;
  end if;
  v_is_return := coalesce(v_is_return, false) or v_shipment.is_return;

  -- The status: shipment_status_id is authoritative (current_status_id is a courier-level code);
  -- the label is the fallback when there is no id.
  v_code := storeops_private.parse_shiprocket_code(p_event -> 'shipment_status_id');
  if v_code is not null then
    select * into v_known from storeops.shiprocket_status_codes where code = v_code;
  else
    select * into v_known from storeops.shiprocket_status_codes
    where label = coalesce(storeops_private.normalize_shiprocket_label(p_event ->> 'shipment_status'),
                           storeops_private.normalize_shiprocket_label(p_event ->> 'current_status'));
    v_code := v_known.code;
  end if;
  v_status := coalesce(v_known.label,
                       storeops_private.normalize_shiprocket_label(p_event ->> 'shipment_status'),
                       storeops_private.normalize_shiprocket_label(p_event ->> 'current_status'),
                       'UNKNOWN');

  -- The latest scan gives the event its place (and its time when the event has none).
  select x.at, nullif(nullif(btrim(x.s ->> 'location'), ''), 'NA'), nullif(btrim(x.s ->> 'activity'), '')
  into v_latest_at, v_location, v_activity
  from (select s, storeops_private.parse_shiprocket_time(s ->> 'date') as at
        from jsonb_array_elements(v_scans) s
        where jsonb_typeof(s) = 'object'
        offset 0) x
  order by x.at desc nulls last
  limit 1;
  v_event_at := coalesce(storeops_private.parse_shiprocket_time(p_event ->> 'current_timestamp'), v_latest_at, p_now);

  -- Every scan once.
  insert into storeops.shipping_tracking_updates
    (tenant_id, shipment_id, status, status_code, location, activity, "timestamp", source, unknown_status)
  select p_tenant_id, v_shipment.id,
         coalesce(c.label, storeops_private.normalize_shiprocket_label(x.s ->> 'sr-status-label'),
                  nullif(btrim(x.s ->> 'status'), ''), 'SCAN'),
         x.code,
         nullif(nullif(btrim(x.s ->> 'location'), ''), 'NA'),
         nullif(btrim(x.s ->> 'activity'), ''),
         coalesce(storeops_private.parse_shiprocket_time(x.s ->> 'date'), v_event_at),
         p_source,
         x.code is not null and c.code is null
  from (select s, storeops_private.parse_shiprocket_code(s -> 'sr-status') as code
        from jsonb_array_elements(v_scans) s
        where jsonb_typeof(s) = 'object') x
  left join storeops.shiprocket_status_codes c on c.code = x.code
  on conflict on constraint shipping_tracking_updates_once do nothing;
  get diagnostics v_rows = row_count;
  v_inserted := v_inserted + v_rows;

  -- The status itself once; unknown codes are kept and flagged.
  insert into storeops.shipping_tracking_updates
    (tenant_id, shipment_id, status, status_code, location, activity, "timestamp", source, unknown_status)
  values (p_tenant_id, v_shipment.id, v_status, v_code, v_location, v_activity, v_event_at, p_source,
          v_known.code is null)
  on conflict on constraint shipping_tracking_updates_once do nothing;
  get diagnostics v_rows = row_count;
  v_inserted := v_inserted + v_rows;

  -- Current status: the greatest event by (terminal, time, code, label), whatever the arrival order.
  v_newer := row(coalesce(v_known.is_terminal, false), v_event_at, coalesce(v_code, -1), v_status)
           > row(v_shipment.is_terminal, coalesce(v_shipment.last_event_at, '-infinity'::timestamptz),
                 coalesce(v_shipment.status_code, -1), v_shipment.status);
  if v_newer
     or (v_shipment.awb is null and v_awb is not null)
     or (v_shipment.sr_order_id is null and v_sr_order_id is not null)
     or (v_courier is not null and v_shipment.courier_name is distinct from v_courier) then
    update storeops.shiprocket_shipments
    set status = case when v_newer then v_status else status end,
        status_code = case when v_newer then v_code else status_code end,
        is_terminal = case when v_newer then coalesce(v_known.is_terminal, false) else is_terminal end,
        last_event_at = case when v_newer then v_event_at else last_event_at end,
        awb = coalesce(awb, v_awb),
        sr_order_id = coalesce(sr_order_id, v_sr_order_id),
        courier_name = coalesce(v_courier, courier_name)
    where id = v_shipment.id;
  end if;

  -- The order follows forward only; never out of delivered/cancelled; returns never move it.
  if v_known.order_status is not null and not v_is_return then
    update storeops.orders o
    set status = v_known.order_status
    where o.id = v_shipment.order_id
      and o.status not in ('delivered', 'cancelled')
      and (case o.status when 'pending' then 0 when 'paid' then 1 when 'shipped' then 2 else 3 end)
        < (case v_known.order_status when 'shipped' then 2 else 3 end);
  end if;

  return case when v_newer then 'applied' when v_inserted > 0 then 'history' else 'duplicate' end;
end
$$;
comment on function storeops.apply_tracking_event(uuid, jsonb, text, timestamptz) is
  'Applies one Shiprocket tracking event (webhook body or converted poll result): history once, current status by greatest (terminal, time), order forward only. Returns applied, history or duplicate; raises P0002 when no shipment matches so the event is retried.';

create function storeops.apply_shipping_webhook(p_webhook_id uuid, p_now timestamptz default now())
returns text
language plpgsql
as $$
declare
  v_hook record;
  v_tenant uuid;
  v_result text;
begin
  select w.id, w.tenant_id, w.payload, w.processed into v_hook
  from storeops.shipping_webhooks w where w.id = p_webhook_id
  for update;
  if not found then
    raise exception 'shipping webhook % does not exist', p_webhook_id using errcode = 'P0002';
  end if;
  if v_hook.processed then
    return 'already_processed';
  end if;
  v_tenant := coalesce(
    v_hook.tenant_id,
    storeops.get_tenant_for_awb(v_hook.payload ->> 'awb', v_hook.payload ->> 'sr_order_id'),
    storeops.get_tenant_for_awb(null, v_hook.payload ->> 'order_id'));
  if v_tenant is null then
    raise exception 'no tenant has a shipment with awb % (sr_order_id %)',
      coalesce(v_hook.payload ->> 'awb', '-'), coalesce(v_hook.payload ->> 'sr_order_id', '-')
      using errcode = 'P0002', hint = 'record the shipment first, or give Shiprocket the per-tenant webhook URL';
  end if;
  v_result := storeops.apply_tracking_event(v_tenant, v_hook.payload, 'webhook', p_now);
  update storeops.shipping_webhooks
  set processed = true, processed_at = p_now, error = null, tenant_id = v_tenant
  where id = p_webhook_id;
  return v_result;
end
$$;
comment on function storeops.apply_shipping_webhook(uuid, timestamptz) is
  'Applies a stored Shiprocket webhook and marks it processed; a processed one returns already_processed. The retry worker calls this for operation_type shipping_webhook.';

create function storeops.record_shipping_webhook_failure(p_webhook_id uuid, p_error text) returns integer
language sql
as $$
  update storeops.shipping_webhooks
  set error = p_error, attempts = attempts + 1
  where id = p_webhook_id and not processed
  returning attempts
$$;
comment on function storeops.record_shipping_webhook_failure(uuid, text) is
  'Keeps the latest error and attempt count on the webhook row, so an operator sees why it is not applied yet.';

-- apply_tracking_event for many events at once, set-based: one statement for the whole batch
-- instead of ~8 per event. Each event is already matched to its shipment, and the caller holds
-- the shipments' and their orders' row locks. The result is that of apply_tracking_event on each
-- event in array order:
--   * history: the rows of every event, each key once, the first in array order winning (scans of
--     an event before its status row, as apply_tracking_event inserts them); existing rows win;
--   * current status: the greatest event by (terminal, time, code, label) if greater than the
--     shipment's; sr_order_id the first one seen if the shipment has none; courier_name the last
--     one seen;
--   * the order: the first delivered/cancelled in array order, else shipped; forward only, never
--     out of delivered or cancelled; returns never move it.
-- It does not look up, create or fill the AWB of shipments: the caller leaves such events to
-- apply_tracking_event.
create function storeops_private.apply_tracking_events(
  p_shipment_ids uuid[],
  p_events jsonb[],
  p_source text,
  p_now timestamptz
) returns void
language plpgsql
as $$
begin
  with ev as materialized (
    select e.n, s.id as shipment_id, s.tenant_id, s.order_id, s.courier_name as old_courier,
           row(s.is_terminal, coalesce(s.last_event_at, '-infinity'::timestamptz), coalesce(s.status_code, -1), s.status)
             as old_rank,
           nullif(btrim(e.event ->> 'sr_order_id'), '') as sr_order_id,
           nullif(btrim(e.event ->> 'courier_name'), '') as courier,
           s.is_return
             or coalesce(storeops_private.parse_shiprocket_code(e.event -> 'is_return') = 1
                         or (e.event -> 'is_return') = 'true'::jsonb, false) as is_return,
           coalesce(c.code, kl.code) as code,
           coalesce(kc.label, kl.label) is not null as known,
           coalesce(kc.label, kl.label, c.label, 'UNKNOWN') as status,
           coalesce(kc.order_status, kl.order_status) as order_status,
           coalesce(kc.is_terminal, kl.is_terminal, false) as is_terminal,
           coalesce(storeops_private.parse_shiprocket_time(e.event ->> 'current_timestamp'), l.at, p_now) as event_at,
           l.location, l.activity, c.scans
    from unnest(p_shipment_ids, p_events) with ordinality as e(shipment_id, event, n)
    join storeops.shiprocket_shipments s on s.id = e.shipment_id
    cross join lateral (
      select storeops_private.parse_shiprocket_code(e.event -> 'shipment_status_id') as code,
             coalesce(storeops_private.normalize_shiprocket_label(e.event ->> 'shipment_status'),
                      storeops_private.normalize_shiprocket_label(e.event ->> 'current_status')) as label,
             case when jsonb_typeof(e.event -> 'scans') = 'array' then e.event -> 'scans' else '[]'::jsonb end as scans
    ) c
    -- shipment_status_id decides; the label only when there is no id.
    left join storeops.shiprocket_status_codes kc on kc.code = c.code
    left join storeops.shiprocket_status_codes kl on c.code is null and kl.label = c.label
    -- The latest scan gives the event its place (and its time when the event has none).
    left join lateral (
      select x.at, nullif(nullif(btrim(x.s ->> 'location'), ''), 'NA') as location,
             nullif(btrim(x.s ->> 'activity'), '') as activity
      from (select s, storeops_private.parse_shiprocket_time(s ->> 'date') as at
            from jsonb_array_elements(c.scans) s
            where jsonb_typeof(s) = 'object'
            offset 0) x
      order by x.at desc nulls last
      limit 1
    ) l on true
  ), history as (
    select ev.n, 0 as part, x.i, ev.tenant_id, ev.shipment_id,
           coalesce(k.label, storeops_private.normalize_shiprocket_label(x.s ->> 'sr-status-label'),
                    nullif(btrim(x.s ->> 'status'), ''), 'SCAN') as status,
           x.code,
           nullif(nullif(btrim(x.s ->> 'location'), ''), 'NA') as location,
           nullif(btrim(x.s ->> 'activity'), '') as activity,
           coalesce(storeops_private.parse_shiprocket_time(x.s ->> 'date'), ev.event_at) as at,
           x.code is not null and k.code is null as unknown_status
    from ev
    cross join lateral (
      select s, i, storeops_private.parse_shiprocket_code(s -> 'sr-status') as code
      from jsonb_array_elements(ev.scans) with ordinality as a(s, i)
      where jsonb_typeof(s) = 'object'
    ) x
    left join storeops.shiprocket_status_codes k on k.code = x.code
    union all
    select ev.n, 1, 0, ev.tenant_id, ev.shipment_id, ev.status, ev.code, ev.location, ev.activity, ev.event_at,
           not ev.known
    from ev
  ), inserted as (
    insert into storeops.shipping_tracking_updates
      (tenant_id, shipment_id, status, status_code, location, activity, "timestamp", source, unknown_status)
    select tenant_id, shipment_id, status, code, location, activity, at, p_source, unknown_status
    from (select distinct on (shipment_id, at, status, location) *
          from history
          order by shipment_id, at, status, location, n, part, i) once
    on conflict on constraint shipping_tracking_updates_once do nothing
  ), per_shipment as (
    select b.shipment_id, b.is_terminal, b.event_at, b.code, b.status, b.newer, a.sr_order_id, a.courier,
           a.courier_changed
    from (select distinct on (shipment_id) shipment_id, is_terminal, event_at, code, status,
                 row(is_terminal, event_at, coalesce(code, -1), status) > old_rank as newer
          from ev
          order by shipment_id, is_terminal desc, event_at desc, coalesce(code, -1) desc, status desc) b
    join (select shipment_id,
                 (array_agg(sr_order_id order by n) filter (where sr_order_id is not null))[1] as sr_order_id,
                 (array_agg(courier order by n desc) filter (where courier is not null))[1] as courier,
                 coalesce(bool_or(courier is distinct from old_courier) filter (where courier is not null), false)
                   as courier_changed
          from ev
          group by shipment_id) a on a.shipment_id = b.shipment_id
  ), shipments as (
    update storeops.shiprocket_shipments s
    set status = case when p.newer then p.status else s.status end,
        status_code = case when p.newer then p.code else s.status_code end,
        is_terminal = case when p.newer then p.is_terminal else s.is_terminal end,
        last_event_at = case when p.newer then p.event_at else s.last_event_at end,
        sr_order_id = coalesce(s.sr_order_id, p.sr_order_id),
        courier_name = coalesce(p.courier, s.courier_name)
    from per_shipment p
    where s.id = p.shipment_id
      and (p.newer or (s.sr_order_id is null and p.sr_order_id is not null) or p.courier_changed)
  ), per_order as (
    select order_id,
           (array_agg(order_status order by n) filter (where order_status <> 'shipped'))[1] as final_status,
           bool_or(order_status = 'shipped') as shipped
    from ev
    where order_status is not null and not is_return
    group by order_id
  )
  update storeops.orders o
  set status = case when p.final_status is not null then p.final_status else 'shipped' end
  from per_order p
  where o.id = p.order_id
    and ((p.final_status is not null and o.status in ('pending', 'paid', 'shipped'))
         or (p.shipped and o.status in ('pending', 'paid')));
end
$$;
comment on function storeops_private.apply_tracking_events(uuid[], jsonb[], text, timestamptz) is
  'apply_tracking_event for a batch of events already matched to their (locked) shipments, in one statement: same history, status, courier and order results as applying them one by one in array order.';

-- Plans: generic (planned once per session), and no sequential scans: statistics gathered while a
-- table was still empty would otherwise have every lookup of a batch scan the whole table once it
-- has grown.
create function storeops.process_shipping_webhooks(p_limit integer default 500, p_now timestamptz default now())
returns integer
language plpgsql
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
  v_ids uuid[];
  v_tenants uuid[];      -- as stored (NULL: the intake did not know)
  v_payloads jsonb[];
  v_shipments uuid[];    -- the shipment matched by AWB, NULL: left to apply_tracking_event
  v_orders uuid[];
  v_owners uuid[];       -- the matched shipment's tenant
  v_locked_shipments uuid[];
  v_locked_orders uuid[];
  v_ready boolean[];
  v_careful boolean := false;  -- false: the fast path; true: one subtransaction per event
  v_run_shipments uuid[];
  v_run_events jsonb[];
  v_tenant uuid;
  v_done_ids uuid[];
  v_done_tenants uuid[];
  v_failed_ids uuid[];
  v_failed_tenants uuid[];
  v_failed_errors text[];
  v_handled integer;
begin
  -- Claim the oldest never-attempted rows.
  select coalesce(array_agg(id), '{}') into v_ids
  from (select w.id from storeops.shipping_webhooks w
        where not w.processed and w.attempts = 0
        order by w.created_at
        limit greatest(coalesce(p_limit, 500), 0)
        for update skip locked) claimed;
  if cardinality(v_ids) = 0 then
    return 0;
  end if;
  -- Match each to its shipment by AWB as apply_tracking_event would (with the tenant the webhook
  -- names, else the one owning the AWB). Anything else (no AWB, unknown AWB, not an object) stays
  -- unmatched and goes through apply_tracking_event one by one.
  select array_agg(w.tenant_id order by u.n), array_agg(w.payload order by u.n), array_agg(s.id order by u.n),
         array_agg(s.order_id order by u.n), array_agg(s.tenant_id order by u.n)
  into v_tenants, v_payloads, v_shipments, v_orders, v_owners
  from unnest(v_ids) with ordinality as u(id, n)
  join storeops.shipping_webhooks w on w.id = u.id
  left join storeops.shiprocket_shipments s
    on jsonb_typeof(w.payload) = 'object'
   and s.awb = nullif(btrim(w.payload ->> 'awb'), '')
   and (w.tenant_id is null or s.tenant_id = w.tenant_id);

  -- Lock the matched shipments, then their orders, in id order without waiting: an event whose
  -- shipment or order another runner holds stays for the next call. Only when no event is ready do
  -- we wait, and never for a shipment while holding one: holding none, for the shipments then their
  -- orders; holding some (their orders are all taken), for those orders. A runner holding orders
  -- has ready events and waits for nothing here, so runners never wait on each other in a cycle.
  select coalesce(array_agg(id), '{}') into v_locked_shipments
  from (select id from storeops.shiprocket_shipments where id = any (v_shipments) order by id
        for update skip locked) s;
  select coalesce(array_agg(id), '{}') into v_locked_orders
  from (select o.id from storeops.orders o
        where o.id in (select s.order_id from storeops.shiprocket_shipments s where s.id = any (v_locked_shipments))
        order by o.id
        for update skip locked) s;
  select array_agg(u.shipment_id is null or (u.shipment_id = any (v_locked_shipments) and u.order_id = any (v_locked_orders))
                   order by u.n)
  into v_ready
  from unnest(v_shipments, v_orders) with ordinality as u(shipment_id, order_id, n);
  if not (true = any (v_ready)) then
    if cardinality(v_locked_shipments) = 0 then
      perform 1 from storeops.shiprocket_shipments where id = any (v_shipments) order by id for update;
      v_locked_shipments := array_remove(v_shipments, null);
    end if;
    perform 1 from storeops.orders o
    where o.id in (select s.order_id from storeops.shiprocket_shipments s where s.id = any (v_locked_shipments))
    order by o.id
    for update;
    select array_agg(u.shipment_id = any (v_locked_shipments) order by u.n) into v_ready
    from unnest(v_shipments) with ordinality as u(shipment_id, n);
  end if;

  -- Fast path: runs of matched events are applied set-based (apply_tracking_events), each unmatched
  -- event in between by apply_tracking_event, so the order of events is kept; the rows are marked
  -- processed by one update. An unmatched event (the shipment may not be recorded yet, the tenant
  -- unknown) runs in its own subtransaction, so its expected failure does not undo the batch; matched
  -- ones share one. Any other error undoes the attempt and the batch is redone the careful way: one
  -- subtransaction per event, so only the bad event fails.
  loop
    v_done_ids := '{}'; v_done_tenants := '{}'; v_failed_ids := '{}'; v_failed_tenants := '{}'; v_failed_errors := '{}';
    v_handled := 0;
    v_run_shipments := '{}'; v_run_events := '{}';
    begin
      for i in 1 .. cardinality(v_ids) loop
        continue when not v_ready[i];
        v_handled := v_handled + 1;
        if v_careful then
          begin
            perform storeops.apply_shipping_webhook(v_ids[i], p_now);
          exception when others then
            v_failed_ids := v_failed_ids || v_ids[i];
            v_failed_tenants := v_failed_tenants || v_tenants[i];
            v_failed_errors := v_failed_errors || sqlerrm;
          end;
        elsif v_shipments[i] is not null then
          v_run_shipments := v_run_shipments || v_shipments[i];
          v_run_events := array_append(v_run_events, v_payloads[i]);
          v_done_ids := v_done_ids || v_ids[i];
          v_done_tenants := v_done_tenants || v_owners[i];
        else
          if cardinality(v_run_events) > 0 then
            perform storeops_private.apply_tracking_events(v_run_shipments, v_run_events, 'webhook', p_now);
            v_run_shipments := '{}'; v_run_events := '{}';
          end if;
          begin
            v_tenant := coalesce(
              v_tenants[i],
              storeops.get_tenant_for_awb(v_payloads[i] ->> 'awb', v_payloads[i] ->> 'sr_order_id'),
              storeops.get_tenant_for_awb(null, v_payloads[i] ->> 'order_id'));
            if v_tenant is null then
              raise exception 'no tenant has a shipment with awb % (sr_order_id %)',
                coalesce(v_payloads[i] ->> 'awb', '-'), coalesce(v_payloads[i] ->> 'sr_order_id', '-')
                using errcode = 'P0002', hint = 'record the shipment first, or give Shiprocket the per-tenant webhook URL';
            end if;
            perform storeops.apply_tracking_event(v_tenant, v_payloads[i], 'webhook', p_now);
            v_done_ids := v_done_ids || v_ids[i];
            v_done_tenants := v_done_tenants || v_tenant;
          exception when others then
            v_failed_ids := v_failed_ids || v_ids[i];
            v_failed_tenants := v_failed_tenants || v_tenants[i];
            v_failed_errors := v_failed_errors || sqlerrm;
          end;
        end if;
      end loop;
      if not v_careful then
        if cardinality(v_run_events) > 0 then
          perform storeops_private.apply_tracking_events(v_run_shipments, v_run_events, 'webhook', p_now);
        end if;
        update storeops.shipping_webhooks w
        set processed = true, processed_at = p_now, error = null, tenant_id = d.tenant_id
        from unnest(v_done_ids, v_done_tenants) as d(id, tenant_id)
        where w.id = d.id;
      end if;
    exception when others then
      if v_careful then
        raise;
      end if;
      v_careful := true;
      continue;
    end;
    exit;
  end loop;

  for i in 1 .. cardinality(v_failed_ids) loop
    perform storeops.record_shipping_webhook_failure(v_failed_ids[i], v_failed_errors[i]);
    perform storeops.schedule_operation_retry(v_failed_tenants[i], 'shipping_webhook', v_failed_ids[i],
      jsonb_build_object('webhook_id', v_failed_ids[i]), v_failed_errors[i], p_now);
  end loop;
  return v_handled;
end
$$;
comment on function storeops.process_shipping_webhooks(integer, timestamptz) is
  'Applies up to p_limit fresh Shiprocket webhooks oldest first (SKIP LOCKED; events matched by AWB applied set-based, the rest one by one; a batch with an unexpected error is redone one subtransaction per event); a failure is recorded on the row and handed to the retry queue. Returns how many were handled: call until 0.';

create function storeops.list_stale_shipments(
  p_older_than interval,
  p_limit integer default 200,
  p_now timestamptz default now()
) returns table (
  id uuid,
  tenant_id uuid,
  order_id uuid,
  awb text,
  status text,
  status_code integer,
  last_event_at timestamptz,
  last_polled_at timestamptz
)
language sql stable
as $$
  select s.id, s.tenant_id, s.order_id, s.awb, s.status, s.status_code, s.last_event_at, s.last_polled_at
  from storeops.shiprocket_shipments s
  where s.awb is not null and not s.is_terminal
    and greatest(coalesce(s.last_event_at, s.created_at), coalesce(s.last_polled_at, '-infinity'::timestamptz))
        < p_now - p_older_than
  order by greatest(coalesce(s.last_event_at, s.created_at), coalesce(s.last_polled_at, '-infinity'::timestamptz)), s.id
  limit greatest(coalesce(p_limit, 200), 0)
$$;
comment on function storeops.list_stale_shipments(interval, integer, timestamptz) is
  'Live shipments (AWB, not terminal) not heard of (event or poll) for p_older_than, longest silent first: the polling fallback''s work list.';

create function storeops.record_shipments_polled(p_shipment_ids uuid[], p_now timestamptz default now())
returns integer
language plpgsql
as $$
declare
  v_count integer;
begin
  update storeops.shiprocket_shipments
  set last_polled_at = p_now
  where id = any (p_shipment_ids);
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function storeops.record_shipments_polled(uuid[], timestamptz) is
  'Marks shipments as polled now so list_stale_shipments waits a full interval before asking Shiprocket again.';

revoke execute on all functions in schema storeops from public;
grant execute on all functions in schema storeops to storeops_runner;
grant execute on function storeops.current_tenant_id() to storeops_tenant;
