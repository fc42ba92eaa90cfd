-- Why: a refund is recorded as `pending`, with its idempotency key, before Razorpay is called, so a
-- crash or a timeout between our call and Razorpay's answer can always be retried with the same key
-- and never refunds twice. The checks (the order is paid, the amount is positive, all non-failed
-- refunds including pending ones stay within what was captured) run under the order's row lock, so
-- two concurrent requests cannot over-refund. Errors carry SQLSTATEs of class SO that the HTTP
-- layer maps to 4xx responses.
-- depends: 0011_create_payment_webhook_functions

create function storeops.request_refund(
  p_tenant_id uuid,
  p_order_id uuid,
  p_amount bigint,
  p_reason text,
  p_idempotency_key text default null,
  p_now timestamptz default now()
) returns storeops.refunds
language plpgsql
as $$
declare
  v_order storeops.orders;
  v_refund storeops.refunds;
  v_committed bigint;
  v_payment_id text;
  v_has_payments boolean;
begin
  if p_amount is null or p_amount <= 0 then
    raise exception 'refund amount must be above zero (got % paise)', coalesce(p_amount::text, 'none')
      using errcode = 'SO400', hint = 'send the amount in rupees, e.g. 1000.00';
  end if;
  if p_idempotency_key is not null and p_idempotency_key !~ '^[A-Za-z0-9_-]{10,64}$' then
    raise exception 'idempotency key must be 10 to 64 characters of A-Z, a-z, 0-9, _ and -'
      using errcode = 'SO400', hint = 'Razorpay accepts only these keys; a uuid works';
  end if;

  select * into v_order from storeops.orders where id = p_order_id and tenant_id = p_tenant_id for update;
  if not found then
    raise exception 'order % not found', p_order_id
      using errcode = 'SO404', hint = 'check the order id; refunds are limited to your own orders';
  end if;

  if p_idempotency_key is not null then
    select * into v_refund from storeops.refunds where idempotency_key = p_idempotency_key;
    if found then
      if v_refund.tenant_id = p_tenant_id and v_refund.order_id = p_order_id and v_refund.amount = p_amount then
        return v_refund;
      end if;
      raise exception 'idempotency key % was already used for a different refund', p_idempotency_key
        using errcode = 'SO412', hint = 'use a new key for a new refund';
    end if;
  end if;

  if v_order.amount_paid <= 0 or v_order.payment_status not in ('captured', 'partially_refunded', 'refunded') then
    raise exception 'order % is not paid (payment status %): there is nothing captured to refund',
      p_order_id, v_order.payment_status
      using errcode = 'SO409', hint = 'refunds are possible once the payment is captured';
  end if;

  select coalesce(sum(amount), 0) into v_committed
  from storeops.refunds
  where order_id = p_order_id and status <> 'failed';
  if v_committed + p_amount > v_order.amount_paid then
    raise exception 'refund of % paise is more than the % paise left to refund on order % (captured %, refunded or pending %)',
      p_amount, greatest(v_order.amount_paid - v_committed, 0), p_order_id, v_order.amount_paid, v_committed
      using errcode = 'SO422', hint = 'refund at most what is left';
  end if;

  -- The payment to refund: one captured payment with enough left on it; with several captures
  -- (a duplicate capture) the newest first, so the duplicate is what goes back.
  select exists (select 1 from storeops.razorpay_payments where order_id = p_order_id) into v_has_payments;
  select p.razorpay_payment_id into v_payment_id
  from storeops.razorpay_payments p
  where p.order_id = p_order_id and p.status in ('captured', 'refunded') and p.currency = v_order.currency
    and p.amount - (select coalesce(sum(r.amount), 0) from storeops.refunds r
                    where r.razorpay_payment_id = p.razorpay_payment_id and r.status <> 'failed') >= p_amount
  order by p.payment_created_at desc nulls last, p.razorpay_payment_id desc
  limit 1;
  if v_payment_id is null and not v_has_payments then
    v_payment_id := v_order.razorpay_payment_id;
  end if;
  if v_payment_id is null then
    raise exception 'no single payment of order % has % paise left to refund', p_order_id, p_amount
      using errcode = 'SO422', hint = 'split the refund: one per payment';
  end if;

  begin
    insert into storeops.refunds
      (tenant_id, order_id, razorpay_payment_id, amount, currency, reason, status, source, idempotency_key, created_at)
    values
      (p_tenant_id, p_order_id, v_payment_id, p_amount, v_order.currency, nullif(btrim(p_reason), ''), 'pending', 'api',
       coalesce(p_idempotency_key, gen_random_uuid()::text), p_now)
    returning * into v_refund;
  exception when unique_violation then
    -- The same key, committed meanwhile for another order of this tenant.
    raise exception 'idempotency key % was already used for a different refund', p_idempotency_key
      using errcode = 'SO412', hint = 'use a new key for a new refund';
  end;
  return v_refund;
end
$$;
comment on function storeops.request_refund(uuid, uuid, bigint, text, text, timestamptz) is
  'Records a pending refund (minor units) before Razorpay is called, under the order lock. Same idempotency key again: the existing row. Errors (SQLSTATE -> HTTP): SO400 amount not above zero or bad key -> 400; SO404 order not found for the tenant -> 404; SO409 order not paid -> 409; SO412 key reused for a different refund -> 409; SO422 more than is left to refund -> 422.';

create function storeops.record_refund_result(
  p_refund_id uuid,
  p_razorpay_refund_id text,
  p_status text,
  p_error text default null,
  p_now timestamptz default now()
) returns storeops.refunds
language plpgsql
as $$
declare
  v_order_id uuid;
  v_refund storeops.refunds;
  v_other storeops.refunds;
  v_status text;
  v_processed_at timestamptz;
begin
  if p_status is null or p_status not in ('pending', 'processed', 'failed') then
    raise exception 'refund status must be pending, processed or failed (got %)', coalesce(p_status, 'NULL')
      using errcode = 'SO400';
  end if;
  select order_id into v_order_id from storeops.refunds where id = p_refund_id;
  if not found then
    raise exception 'refund % not found', p_refund_id using errcode = 'SO404';
  end if;
  -- Lock order first, then refund: the same order as the webhook path, so the two never deadlock.
  perform 1 from storeops.orders where id = v_order_id for update;
  select * into strict v_refund from storeops.refunds where id = p_refund_id for update;

  v_status := p_status;
  v_processed_at := case when p_status = 'processed' then p_now end;
  if p_razorpay_refund_id is not null then
    if v_refund.razorpay_refund_id is not null and v_refund.razorpay_refund_id <> p_razorpay_refund_id then
      raise exception 'refund % is already Razorpay refund %, not %', p_refund_id, v_refund.razorpay_refund_id,
        p_razorpay_refund_id using errcode = 'SO409';
    end if;
    -- A webhook that could not be matched may have recorded it as a dashboard refund: fold it in.
    select * into v_other from storeops.refunds
    where razorpay_refund_id = p_razorpay_refund_id and id <> p_refund_id
    for update;
    if found then
      if v_other.source <> 'dashboard' or v_other.order_id <> v_refund.order_id then
        raise exception 'Razorpay refund % already belongs to refund %', p_razorpay_refund_id, v_other.id
          using errcode = 'SO409';
      end if;
      delete from storeops.refunds where id = v_other.id;
      if storeops_private.refund_status_rank(v_other.status) > storeops_private.refund_status_rank(v_status) then
        v_status := v_other.status;
      end if;
      v_processed_at := least(v_processed_at, v_other.processed_at);
    end if;
  end if;
  if storeops_private.refund_status_rank(v_refund.status) >= storeops_private.refund_status_rank(v_status) then
    v_status := v_refund.status;
  end if;

  update storeops.refunds
  set razorpay_refund_id = coalesce(razorpay_refund_id, p_razorpay_refund_id),
      status = v_status,
      processed_at = case when v_status = 'processed' then least(processed_at, v_processed_at) end,
      error = case when v_status = 'processed' then null else coalesce(p_error, error) end
  where id = p_refund_id
  returning * into v_refund;
  perform storeops_private.settle_orders(array[v_order_id], p_now);
  return v_refund;
end
$$;
comment on function storeops.record_refund_result(uuid, text, text, text, timestamptz) is
  'Records what Razorpay answered for one of our refunds (its rfnd_ id, status, error) under the order lock; status only climbs pending < failed < processed and the order''s refund_amount follows.';

revoke execute on all functions in schema storeops from public;
grant execute on all functions in schema storeops to storeops_runner;
grant execute on function storeops.current_tenant_id() to storeops_tenant;
