-- Why: Razorpay stops retrying a webhook after 24 hours and then disables it, so webhooks alone can
-- lose orders. The recovery sweep lists payments from Razorpay's API for a time window and hands
-- each one we have not seen (or have seen in an earlier state) to the same code path as a webhook:
-- a synthetic payment_webhooks row, event id 'recovered:<pay_id>:<status>', in a webhook's shape.
-- It is then applied like any other event, so recovery can never disagree with the webhooks.
-- depends: 0011_create_payment_webhook_functions

create function storeops.record_missed_payment(
  p_payment jsonb,
  p_tenant_id uuid default null,
  p_now timestamptz default now()
) returns uuid
language plpgsql
as $$
declare
  v_payment_id text := p_payment ->> 'id';
  v_status text := p_payment ->> 'status';
  v_event text;
  v_id uuid;
begin
  if v_payment_id is null then
    raise exception 'record_missed_payment: the payment has no id' using errcode = '22023';
  end if;
  -- `created` means nothing happened yet; a later sweep sees it again once it has.
  if v_status is null or v_status not in ('authorized', 'captured', 'refunded', 'failed') then
    return null;
  end if;
  perform 1 from storeops.razorpay_payments
  where razorpay_payment_id = v_payment_id
    and storeops_private.payment_status_rank(status) >= storeops_private.payment_status_rank(v_status);
  if found then
    return null;
  end if;
  v_event := case v_status when 'failed' then 'payment.failed' when 'authorized' then 'payment.authorized'
                           else 'payment.captured' end;
  insert into storeops.payment_webhooks (tenant_id, event_id, webhook_type, payload, created_at)
  values (
    coalesce(storeops.get_tenant_for_razorpay_order(p_payment ->> 'order_id'), p_tenant_id),
    'recovered:' || v_payment_id || ':' || v_status,
    v_event,
    jsonb_build_object(
      'entity', 'event', 'event', v_event, 'contains', jsonb_build_array('payment'),
      'payload', jsonb_build_object('payment', jsonb_build_object('entity', p_payment)),
      'created_at', p_payment -> 'created_at', 'recovered_at', floor(extract(epoch from p_now))::bigint),
    p_now)
  on conflict (event_id) do nothing
  returning id into v_id;
  if v_id is not null then
    perform pg_notify('storeops_webhooks', 'payment');
  end if;
  return v_id;
end
$$;
comment on function storeops.record_missed_payment(jsonb, uuid, timestamptz) is
  'Stores a payment fetched from Razorpay''s API as a synthetic webhook (event id recovered:<pay_id>:<status>) unless we already hold that state; returns the new row id or NULL. process_payment_webhooks applies it.';

create function storeops.record_missed_payments(
  p_payments jsonb,
  p_tenant_id uuid default null,
  p_now timestamptz default now()
) returns integer
language sql
as $$
  select count(storeops.record_missed_payment(item, p_tenant_id, p_now))::integer
  from jsonb_array_elements(coalesce(p_payments, '[]'::jsonb)) as item
$$;
comment on function storeops.record_missed_payments(jsonb, uuid, timestamptz) is
  'record_missed_payment for each element of a JSON array (one API page); returns how many were new.';

revoke execute on all functions in schema storeops from public;
grant execute on all functions in schema storeops to storeops_runner;
grant execute on function storeops.current_tenant_id() to storeops_tenant;
