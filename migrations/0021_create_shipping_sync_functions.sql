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

create function storeops.process_shipping_webhooks(p_limit integer default 500, p_now timestamptz default now())
returns integer
language plpgsql
as $$
declare
  v_hook record;
  v_count integer := 0;
begin
  for v_hook in
    select w.id, w.tenant_id
    from storeops.shipping_webhooks w
    where not w.processed and w.attempts = 0
    order by w.created_at
    limit greatest(coalesce(p_limit, 500), 0)
    for update skip locked
  loop
    begin
      perform storeops.apply_shipping_webhook(v_hook.id, p_now);
    exception when others then
      perform storeops.record_shipping_webhook_failure(v_hook.id, sqlerrm);
      perform storeops.schedule_operation_retry(v_hook.tenant_id, 'shipping_webhook', v_hook.id,
        jsonb_build_object('webhook_id', v_hook.id), sqlerrm, p_now);
    end;
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function storeops.process_shipping_webhooks(integer, timestamptz) is
  'Applies up to p_limit fresh Shiprocket webhooks (SKIP LOCKED, each in its own subtransaction); a failure is recorded on the row and handed to the retry queue. Returns how many were handled: call until 0.';

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
