-- Why: a refund Razorpay accepted but has not finished (status pending, as instant refunds and many
-- normal ones are) settles later, and we learn of it only from its refund.processed or
-- refund.failed webhook. If that webhook never arrives (deliveries are at-least-once only while the
-- endpoint answers, and Razorpay gives up after a day of failures), the refund stays pending here
-- for ever: the order keeps counting the amount as committed, and nobody hears that it failed and
-- the customer was never paid back. Missed-webhook recovery fetched payments only; now it also asks
-- Razorpay about each of our refunds that is still pending under a rfnd_ id:
--   * storeops.list_refunds_to_recover(...) names them: pending, sent to Razorpay (rfnd_ id known),
--     older than p_older_than (the webhook had its chance), and not asked about in the last
--     p_recheck (a normal refund can take 5-7 working days; asking about each one every hour would
--     spend the API's rate limit on nothing), the least recently asked first;
--   * storeops.record_refund_check(refund, entity) records what Razorpay answered (GET
--     /v1/refunds/:id), or with no entity that it could not answer for good (a 4xx, no API key):
--     always when it was asked, and when the refund is processed or failed there
--     and not yet here, a synthetic refund.processed or refund.failed webhook (event id
--     recovered:<rfnd_id>:<status>), which process_payment_webhooks applies through the same SQL
--     as a real one (apply_refund_entity: status only climbs, the order is settled again).
-- A refund that was never confirmed by Razorpay (no rfnd_ id) is not this: the retry queue sends it
-- again with its idempotency key (refund_create).
-- depends: 0049_cleanup_resumes_where_it_stopped

alter table storeops.refunds add column gateway_checked_at timestamptz;

comment on column storeops.refunds.gateway_checked_at is
  'When missed-webhook recovery last asked Razorpay about this refund (GET /v1/refunds/:id); NULL if never.';

create index refunds_to_recover_idx on storeops.refunds (gateway_checked_at nulls first, created_at)
  where status = 'pending' and razorpay_refund_id is not null;

create function storeops.list_refunds_to_recover(p_older_than interval default interval '30 minutes',
                                                 p_recheck interval default interval '6 hours',
                                                 p_limit integer default 500,
                                                 p_now timestamptz default now())
returns table (refund_id uuid, tenant_id uuid, razorpay_refund_id text)
language sql
stable
as $$
  select r.id, r.tenant_id, r.razorpay_refund_id
  from storeops.refunds r
  where r.status = 'pending' and r.razorpay_refund_id is not null
    and r.created_at < p_now - p_older_than
    and (r.gateway_checked_at is null or r.gateway_checked_at < p_now - p_recheck)
  order by r.gateway_checked_at nulls first, r.created_at, r.id
  limit greatest(coalesce(p_limit, 500), 0)
$$;

comment on function storeops.list_refunds_to_recover(interval, interval, integer, timestamptz) is
  'Refunds to ask Razorpay about: pending under a rfnd_ id, older than p_older_than, not asked within p_recheck; least recently asked first.';

create function storeops.record_refund_check(p_refund_id uuid, p_refund jsonb, p_now timestamptz default now())
returns uuid
language plpgsql
as $$
declare
  v_refund storeops.refunds;
  v_status text := p_refund ->> 'status';
  v_event text;
  v_id uuid;
begin
  select * into v_refund from storeops.refunds where id = p_refund_id for update;
  if not found then
    raise exception 'refund % does not exist', p_refund_id using errcode = 'P0002';
  end if;
  if p_refund is null then
    -- Razorpay could not answer about it for good (e.g. 'The id provided does not exist' under the
    -- key asked with): asked all the same, so it waits p_recheck instead of going first every run.
    update storeops.refunds set gateway_checked_at = p_now where id = v_refund.id;
    return null;
  end if;
  if v_refund.razorpay_refund_id is null or p_refund ->> 'id' is distinct from v_refund.razorpay_refund_id then
    raise exception 'refund %: Razorpay answered about refund %, expected %', p_refund_id,
      coalesce(p_refund ->> 'id', 'none'), coalesce(v_refund.razorpay_refund_id, 'none')
      using errcode = '22023', hint = 'fetch GET /v1/refunds/<the refund''s razorpay_refund_id>';
  end if;
  if v_status is null or v_status not in ('pending', 'processed', 'failed') then
    raise exception 'refund %: unknown status %', v_refund.razorpay_refund_id, coalesce(v_status, 'NULL')
      using errcode = '22023', hint = 'Razorpay refund statuses are pending, processed, failed';
  end if;

  update storeops.refunds set gateway_checked_at = p_now where id = v_refund.id;
  if v_status = 'pending'
     or storeops_private.refund_status_rank(v_status) <= storeops_private.refund_status_rank(v_refund.status) then
    return null;
  end if;

  v_event := 'refund.' || v_status;
  insert into storeops.payment_webhooks (tenant_id, event_id, webhook_type, payload, created_at)
  values (
    v_refund.tenant_id,
    'recovered:' || v_refund.razorpay_refund_id || ':' || v_status,
    v_event,
    jsonb_build_object(
      'entity', 'event', 'event', v_event, 'contains', jsonb_build_array('refund'),
      'payload', jsonb_build_object('refund', jsonb_build_object('entity', p_refund)),
      'created_at', floor(extract(epoch from p_now))::bigint,
      'recovered_at', floor(extract(epoch from p_now))::bigint),
    p_now)
  on conflict (event_id) do nothing
  returning id into v_id;
  if v_id is not null then
    perform pg_notify('storeops_webhooks', 'payment');
  end if;
  return v_id;
end
$$;

comment on function storeops.record_refund_check(uuid, jsonb, timestamptz) is
  'Records what Razorpay answered about one of our pending refunds (GET /v1/refunds/:id; NULL: no usable answer for good): when it was asked, and a synthetic refund.processed/refund.failed webhook (event id recovered:<rfnd_id>:<status>) when Razorpay has settled it and we have not; returns the new webhook id or NULL. process_payment_webhooks applies it.';
