-- Why: a Razorpay webhook is applied in SQL so the runner, pg_cron and a person in psql get the same
-- result. Webhooks come at least once and in any order, so applying is a merge, not a replay:
--   * a payment's status only climbs its ladder (razorpay_payments); times are the earliest seen;
--   * a refund's status only climbs pending < failed < processed;
--   * the order's payment fields are recomputed from all its payments and refunds under the order's
--     row lock, and its status never moves back (a late payment.failed cannot undo a capture, and a
--     failed attempt cannot fail an order another attempt paid);
--   * a refund event whose payment we have not seen waits (deferred) and is applied the moment the
--     payment is recorded; nothing is dropped;
--   * every captured payment gets a reconciliation row: matched, or a mismatch with a reason.
-- The worker applies batches with process_payment_webhooks: rows claimed with SKIP LOCKED, their
-- orders locked with SKIP LOCKED too (so two runners never wait on each other in a cycle). Per event
-- only the entity is merged; what is per order (the order's payment fields, reconciliation) and the
-- webhooks' processed flags are written once per batch, set-based: a statement costs far more than a
-- row. A batch that hits an error is redone with one subtransaction per event, so a bad event only
-- fails itself (error stored, attempts bumped, a payment_webhook retry scheduled).
-- depends: 0010_create_razorpay_payments

-- Recompute the payment fields of orders from their payments and processed refunds. The caller
-- holds the orders' row locks. Monotonic: status never moves back from paid; amount_paid never
-- shrinks; payment_status only climbs until refunds decide it.
create function storeops_private.refresh_order_payment_state(p_order_ids uuid[]) returns void
language sql
as $$
  with facts as (
    select o.id, o.status, o.payment_status, o.razorpay_payment_id, o.amount_paid, o.paid_at, o.refund_amount,
           coalesce(p.any_captured, false) as any_captured,
           least(greatest(coalesce(p.max_rank, 0), storeops_private.payment_status_rank(o.payment_status)), 3) as rank,
           greatest(o.amount_paid, coalesce(p.captured_amount, 0)) as new_amount_paid,
           p.captured_at, p.best_payment,
           (select coalesce(sum(r.amount), 0) from storeops.refunds r
            where r.order_id = o.id and r.status = 'processed' and r.currency = o.currency) as refunded
    from storeops.orders o
    left join lateral (
      select bool_or(p.status in ('captured', 'refunded')) as any_captured,
             max(storeops_private.payment_status_rank(p.status)) as max_rank,
             sum(p.amount) filter (where p.status in ('captured', 'refunded') and p.currency = o.currency)
               as captured_amount,
             min(p.captured_at) as captured_at,
             -- The payment the order points at: the first captured one, else an authorised one,
             -- else the first attempt; by Razorpay's creation time, so arrival order does not matter.
             (array_agg(p.razorpay_payment_id order by p.status in ('captured', 'refunded') desc,
                        p.status = 'authorized' desc, p.payment_created_at, p.razorpay_payment_id))[1] as best_payment
      from storeops.razorpay_payments p
      where p.order_id = o.id
    ) p on true
    where o.id = any (p_order_ids)
  ), computed as (
    select id,
           case when status = 'pending' and any_captured then 'paid' else status end as status,
           case when refunded > 0 and new_amount_paid > 0 and refunded >= new_amount_paid then 'refunded'
                when refunded > 0 then 'partially_refunded'
                when rank = 3 then 'captured'
                when rank = 2 then 'authorized'
                when rank = 1 then 'failed'
                else 'pending' end as payment_status,
           coalesce(best_payment, razorpay_payment_id) as razorpay_payment_id,
           new_amount_paid as amount_paid,
           case when any_captured then least(paid_at, captured_at) else paid_at end as paid_at,
           refunded as refund_amount
    from facts
  )
  update storeops.orders o
  set status = c.status, payment_status = c.payment_status, razorpay_payment_id = c.razorpay_payment_id,
      amount_paid = c.amount_paid, paid_at = c.paid_at, refund_amount = c.refund_amount
  from computed c
  where o.id = c.id
    and (o.status, o.payment_status, o.razorpay_payment_id, o.amount_paid, o.paid_at, o.refund_amount)
        is distinct from (c.status, c.payment_status, c.razorpay_payment_id, c.amount_paid, c.paid_at, c.refund_amount)
$$;
comment on function storeops_private.refresh_order_payment_state(uuid[]) is
  'Derives orders.status/payment_status/razorpay_payment_id/amount_paid/paid_at/refund_amount from the orders'' payments and processed refunds, set-based; never moves status back. Caller holds the order locks.';

-- Alert channel for reconciliation mismatches (the runner LISTENs on storeops_alert).
create function storeops_private.notify_reconciliation_mismatch(p_row storeops.payment_reconciliation) returns void
language sql
as $$
  select pg_notify('storeops_alert', json_build_object(
    'kind', 'reconciliation_mismatch', 'id', p_row.id, 'reason', p_row.reason, 'tenant_id', p_row.tenant_id,
    'order_id', p_row.order_id, 'razorpay_payment_id', p_row.razorpay_payment_id,
    'expected_amount', p_row.expected_amount, 'received_amount', p_row.received_amount,
    'difference', p_row.difference, 'currency', p_row.currency)::text)
$$;
comment on function storeops_private.notify_reconciliation_mismatch(storeops.payment_reconciliation) is
  'pg_notify on storeops_alert (kind reconciliation_mismatch, id, reason, amounts) so an operator hears of a mismatch as it is found.';

-- One reconciliation row per captured payment of each order. The first capture (by Razorpay's
-- creation time) is compared with the order: matched, or under/over/currency. Every later capture
-- is a duplicate_capture that expected nothing (its whole amount is the difference). Rows a person
-- resolved are left alone; unchanged rows are not rewritten.
create function storeops_private.reconcile_order_payments(p_order_ids uuid[], p_now timestamptz) returns void
language plpgsql
as $$
declare
  v_row storeops.payment_reconciliation;
begin
  for v_row in
    with captured as (
      select p.order_id, p.razorpay_payment_id, p.amount, p.currency,
             row_number() over w as n,
             first_value(p.razorpay_payment_id) over w as first_payment_id
      from storeops.razorpay_payments p
      where p.order_id = any (p_order_ids) and p.status in ('captured', 'refunded')
      window w as (partition by p.order_id order by p.payment_created_at, p.razorpay_payment_id)
    ), computed as (
      select o.tenant_id, o.id as order_id, o.razorpay_order_id, c.razorpay_payment_id,
             case when c.n > 1 then 0 else o.amount end as expected_amount,
             c.amount as received_amount, c.currency, o.currency as expected_currency,
             case when c.n > 1 then 'duplicate_capture'
                  when c.currency <> o.currency then 'currency'
                  when c.amount < o.amount then 'under'
                  when c.amount > o.amount then 'over' end as reason,
             case when c.n > 1 then 'order already paid by ' || c.first_payment_id end as notes
      from captured c
      join storeops.orders o on o.id = c.order_id
    )
    insert into storeops.payment_reconciliation as r
      (tenant_id, order_id, razorpay_order_id, razorpay_payment_id, expected_amount, received_amount, currency,
       expected_currency, status, reason, notes, reconciled_at)
    select tenant_id, order_id, razorpay_order_id, razorpay_payment_id, expected_amount, received_amount, currency,
           expected_currency, case when reason is null then 'matched' else 'mismatch' end, reason, notes,
           case when reason is null then p_now end
    from computed
    on conflict (razorpay_payment_id) do update
    set tenant_id = excluded.tenant_id, order_id = excluded.order_id, razorpay_order_id = excluded.razorpay_order_id,
        expected_amount = excluded.expected_amount, received_amount = excluded.received_amount,
        currency = excluded.currency, expected_currency = excluded.expected_currency, status = excluded.status,
        reason = excluded.reason, notes = excluded.notes, reconciled_at = excluded.reconciled_at
    where r.status <> 'resolved'
      and (r.tenant_id, r.order_id, r.expected_amount, r.received_amount, r.currency, r.expected_currency, r.status,
           r.reason)
          is distinct from
          (excluded.tenant_id, excluded.order_id, excluded.expected_amount, excluded.received_amount,
           excluded.currency, excluded.expected_currency, excluded.status, excluded.reason)
    returning r.*
  loop
    if v_row.status = 'mismatch' then
      perform storeops_private.notify_reconciliation_mismatch(v_row);
    end if;
  end loop;
end
$$;
comment on function storeops_private.reconcile_order_payments(uuid[], timestamptz) is
  'Upserts a reconciliation row per captured payment of the orders (matched, under, over, currency, duplicate_capture) and notifies new mismatches; resolved rows are kept.';

-- Everything per order after its payments or refunds changed: its payment fields, then its
-- reconciliation rows. The caller holds the order locks.
create function storeops_private.settle_orders(p_order_ids uuid[], p_now timestamptz) returns void
language plpgsql
as $$
begin
  if cardinality(p_order_ids) > 0 then
    perform storeops_private.refresh_order_payment_state(p_order_ids);
    perform storeops_private.reconcile_order_payments(p_order_ids, p_now);
  end if;
end
$$;
comment on function storeops_private.settle_orders(uuid[], timestamptz) is
  'Recomputes the orders'' payment fields and reconciliation after their payments or refunds changed (per event, or once per batch).';

-- A payment whose order we do not know: a reconciliation row for a person, never an error loop.
create function storeops_private.record_unknown_order_payment(p_payment storeops.razorpay_payments, p_now timestamptz)
returns void
language plpgsql
as $$
declare
  v_row storeops.payment_reconciliation;
begin
  insert into storeops.payment_reconciliation as r
    (tenant_id, order_id, razorpay_order_id, razorpay_payment_id, expected_amount, received_amount, currency,
     status, reason, notes)
  values
    (p_payment.tenant_id, null, p_payment.razorpay_order_id, p_payment.razorpay_payment_id, null, p_payment.amount,
     p_payment.currency, 'mismatch', 'unknown_order',
     case when p_payment.razorpay_order_id is null then 'captured payment carries no order_id'
          else 'no order with razorpay_order_id ' || p_payment.razorpay_order_id end)
  on conflict (razorpay_payment_id) do nothing
  returning r.* into v_row;
  if v_row.id is not null then
    perform storeops_private.notify_reconciliation_mismatch(v_row);
  end if;
end
$$;
comment on function storeops_private.record_unknown_order_payment(storeops.razorpay_payments, timestamptz) is
  'Records a captured payment for an order we do not know as an unknown_order mismatch (tenant may be NULL) and notifies it.';

-- What applying one event did; a composite so plpgsql calls it as a plain expression (no executor).
create type storeops_private.webhook_outcome as (
  outcome text,      -- applied, duplicate, stale, deferred, unknown_order, ignored
  tenant_id uuid,    -- the tenant it turned out to belong to (the intake may not have known)
  order_id uuid      -- the order whose payment state it changed, for the caller to settle
);
comment on type storeops_private.webhook_outcome is 'Result of applying one Razorpay event: outcome word, tenant, order to settle.';

-- Merge one payment entity (payment.* and order.paid) into razorpay_payments. With p_settle the
-- order is settled at once; without, the result names the order the caller must settle.
create function storeops_private.apply_payment_entity(
  p_webhook storeops.payment_webhooks,
  p_entity jsonb,
  p_event_at timestamptz,
  p_now timestamptz,
  p_settle boolean
) returns storeops_private.webhook_outcome
language plpgsql
as $$
declare
  v_result storeops_private.webhook_outcome;
  v_payment_id text := p_entity ->> 'id';
  v_status text := p_entity ->> 'status';
  v_razorpay_order_id text := nullif(p_entity ->> 'order_id', '');
  v_rank integer;
  v_order storeops.orders;
  v_has_order boolean := false;
  v_old storeops.razorpay_payments;
  v_new storeops.razorpay_payments;
  v_changed boolean := false;
  v_deferred storeops.payment_webhooks;
begin
  if v_payment_id is null then
    raise exception 'payment webhook %: payload.payment.entity.id is missing', p_webhook.event_id
      using errcode = '22023', hint = 'a payment.* or order.paid event carries the payment at payload.payment.entity';
  end if;
  -- Read the state from the entity, not the event name: payment.authorized may already show a capture.
  if coalesce((p_entity ->> 'captured')::boolean, false) and coalesce(storeops_private.payment_status_rank(v_status), 0) < 3 then
    v_status := 'captured';
  end if;
  v_rank := storeops_private.payment_status_rank(v_status);
  if v_rank is null or v_status in ('pending', 'partially_refunded') then
    raise exception 'payment %: unknown status %', v_payment_id, coalesce(v_status, 'NULL')
      using errcode = '22023', hint = 'Razorpay payment statuses are created, authorized, captured, refunded, failed';
  end if;

  if v_razorpay_order_id is not null then
    select * into v_order from storeops.orders o
    where o.razorpay_order_id = v_razorpay_order_id
      and (p_webhook.tenant_id is null or o.tenant_id = p_webhook.tenant_id)
    for update;
    v_has_order := found;
  end if;

  select * into v_old from storeops.razorpay_payments where razorpay_payment_id = v_payment_id for update;
  if not found then
    insert into storeops.razorpay_payments
      (tenant_id, order_id, razorpay_payment_id, razorpay_order_id, amount, currency, status, method, error_code,
       error_description, amount_refunded, payment_created_at, authorized_at, captured_at, failed_at)
    values
      (case when v_has_order then v_order.tenant_id else p_webhook.tenant_id end,
       case when v_has_order then v_order.id end,
       v_payment_id, v_razorpay_order_id, (p_entity ->> 'amount')::bigint, coalesce(p_entity ->> 'currency', 'INR'),
       v_status, p_entity ->> 'method',
       case when v_status = 'failed' then nullif(p_entity ->> 'error_code', '') end,
       case when v_status = 'failed' then nullif(p_entity ->> 'error_description', '') end,
       coalesce((p_entity ->> 'amount_refunded')::bigint, 0),
       to_timestamp((p_entity ->> 'created_at')::double precision),
       case when v_rank >= 2 then p_event_at end,
       case when v_rank >= 3 then p_event_at end,
       case when v_status = 'failed' then p_event_at end)
    on conflict (razorpay_payment_id) do nothing
    returning * into v_new;
    if v_new.id is null then
      -- Another transaction recorded this payment first: merge into its row.
      select * into strict v_old from storeops.razorpay_payments where razorpay_payment_id = v_payment_id for update;
    else
      v_changed := true;
    end if;
  end if;

  if v_old.id is not null then
    -- A tenant's own signature vouches for its own payments only: never let it move another
    -- tenant's payment (and so settle that tenant's order).
    if p_webhook.tenant_id is not null and v_old.tenant_id is not null and v_old.tenant_id <> p_webhook.tenant_id then
      raise exception 'payment % belongs to another tenant; this webhook''s tenant may not change it', v_payment_id
        using errcode = '42501';
    end if;
    v_new := v_old;
    if v_rank > storeops_private.payment_status_rank(v_old.status) then
      v_new.status := v_status;
    end if;
    if v_new.order_id is null and v_has_order then
      v_new.order_id := v_order.id;
      v_new.tenant_id := v_order.tenant_id;
    end if;
    v_new.razorpay_order_id := coalesce(v_new.razorpay_order_id, v_razorpay_order_id);
    v_new.method := coalesce(v_new.method, p_entity ->> 'method');
    if v_status = 'failed' then
      v_new.error_code := coalesce(v_new.error_code, nullif(p_entity ->> 'error_code', ''));
      v_new.error_description := coalesce(v_new.error_description, nullif(p_entity ->> 'error_description', ''));
      v_new.failed_at := least(v_new.failed_at, p_event_at);
    end if;
    v_new.amount_refunded := greatest(v_new.amount_refunded, coalesce((p_entity ->> 'amount_refunded')::bigint, 0));
    v_new.payment_created_at := coalesce(v_new.payment_created_at,
                                         to_timestamp((p_entity ->> 'created_at')::double precision));
    if v_rank >= 2 then
      v_new.authorized_at := least(v_new.authorized_at, p_event_at);
    end if;
    if v_rank >= 3 then
      v_new.captured_at := least(v_new.captured_at, p_event_at);
    end if;
    if v_new is distinct from v_old then
      update storeops.razorpay_payments
      set tenant_id = v_new.tenant_id, order_id = v_new.order_id, razorpay_order_id = v_new.razorpay_order_id,
          status = v_new.status, method = v_new.method, error_code = v_new.error_code,
          error_description = v_new.error_description, amount_refunded = v_new.amount_refunded,
          payment_created_at = v_new.payment_created_at, authorized_at = v_new.authorized_at,
          captured_at = v_new.captured_at, failed_at = v_new.failed_at
      where id = v_old.id;
      v_changed := true;
    end if;
  end if;

  v_result.tenant_id := v_new.tenant_id;
  if v_new.order_id is null then
    if v_new.status in ('captured', 'refunded') then
      perform storeops_private.record_unknown_order_payment(v_new, p_now);
    end if;
    v_result.outcome := 'unknown_order';
    return v_result;
  end if;

  -- An older snapshot (a payment.failed after the capture) may still add detail (failed_at, the
  -- error), but it is reported as stale: it moved nothing forward.
  if not v_changed or v_rank < storeops_private.payment_status_rank(v_old.status) then
    v_result.outcome := case when v_rank < storeops_private.payment_status_rank(v_old.status) then 'stale' else 'duplicate' end;
    if not v_changed then
      return v_result;
    end if;
  else
    v_result.outcome := 'applied';
  end if;

  -- Refund events that arrived before this payment: apply them now, under the same order lock.
  -- SKIP LOCKED: a row someone else holds is being applied by them (after we commit).
  if v_old.id is null or v_old.order_id is null then
    for v_deferred in
      select * from storeops.payment_webhooks
      where deferred_payment_id = v_payment_id
      order by created_at, id
      for update skip locked
    loop
      -- Each in its own subtransaction, settling the order: a refund the order's rules refuse
      -- (e.g. more than was paid) fails alone and is retried, and never takes this payment with it.
      begin
        perform storeops_private.apply_payment_webhook_row(v_deferred, p_now, true, true);
      exception when others then
        update storeops.payment_webhooks set error = sqlerrm, attempts = attempts + 1 where id = v_deferred.id;
        perform storeops.schedule_operation_retry(v_deferred.tenant_id, 'payment_webhook', v_deferred.id,
          jsonb_build_object('webhook_id', v_deferred.id), sqlerrm, p_now);
      end;
    end loop;
  end if;
  v_result.order_id := v_new.order_id;
  if p_settle then
    perform storeops_private.settle_orders(array[v_new.order_id], p_now);
  end if;
  return v_result;
end
$$;
comment on function storeops_private.apply_payment_entity(storeops.payment_webhooks, jsonb, timestamptz, timestamptz, boolean) is
  'Merges a payment snapshot into razorpay_payments (status only climbs) and applies refunds that waited for this payment; settles the order now (p_settle) or names it for the caller to settle.';

create function storeops_private.refund_status_rank(p_status text) returns integer
language sql immutable parallel safe
as $$
  select case p_status when 'pending' then 0 when 'failed' then 1 when 'processed' then 2 end
$$;
comment on function storeops_private.refund_status_rank(text) is
  'Position on the refund ladder pending < failed < processed: the merge keeps the highest, so arrival order does not matter.';

-- Merge one refund entity (refund.*) into refunds. Our own refund is found by razorpay_refund_id,
-- else by the idempotency key we put in its notes, else as the oldest pending API refund of the same
-- payment and amount; a refund we did not make (Razorpay dashboard) is inserted as source dashboard.
create function storeops_private.apply_refund_entity(
  p_webhook storeops.payment_webhooks,
  p_entity jsonb,
  p_event_at timestamptz,
  p_now timestamptz,
  p_settle boolean
) returns storeops_private.webhook_outcome
language plpgsql
as $$
declare
  v_result storeops_private.webhook_outcome;
  v_refund_id text := p_entity ->> 'id';
  v_payment_id text := p_entity ->> 'payment_id';
  v_status text := p_entity ->> 'status';
  v_amount bigint := (p_entity ->> 'amount')::bigint;
  v_notes jsonb := case when jsonb_typeof(p_entity -> 'notes') = 'object' then p_entity -> 'notes' else '{}'::jsonb end;
  v_payment storeops.razorpay_payments;
  v_old storeops.refunds;
  v_new storeops.refunds;
begin
  if v_refund_id is null or v_payment_id is null then
    raise exception 'refund webhook %: payload.refund.entity needs id and payment_id', p_webhook.event_id
      using errcode = '22023';
  end if;
  if v_status is null or v_status not in ('pending', 'processed', 'failed') then
    raise exception 'refund %: unknown status %', v_refund_id, coalesce(v_status, 'NULL')
      using errcode = '22023', hint = 'Razorpay refund statuses are pending, processed, failed';
  end if;
  if v_amount is null or v_amount <= 0 then
    raise exception 'refund %: amount must be a positive number of paise', v_refund_id using errcode = '22023';
  end if;

  select * into v_payment from storeops.razorpay_payments where razorpay_payment_id = v_payment_id;
  v_result.tenant_id := v_payment.tenant_id;
  if v_payment.order_id is null then
    -- Its payment has not reached us (or its order is unknown): keep it until the payment does.
    v_result.outcome := 'deferred';
    return v_result;
  end if;
  if p_webhook.tenant_id is not null and p_webhook.tenant_id <> v_payment.tenant_id then
    raise exception 'refund %: webhook of tenant % refers to a payment of tenant %', v_refund_id,
      p_webhook.tenant_id, v_payment.tenant_id
      using errcode = '42501', hint = 'check which tenant''s webhook secret signed this event';
  end if;
  perform 1 from storeops.orders where id = v_payment.order_id for update;

  select * into v_old from storeops.refunds where razorpay_refund_id = v_refund_id for update;
  if not found and v_notes ? 'idempotency_key' then
    select * into v_old from storeops.refunds
    where idempotency_key = v_notes ->> 'idempotency_key' and order_id = v_payment.order_id
      and razorpay_refund_id is null
    for update;
  end if;
  -- No guessing by payment and amount: every refund we send carries its idempotency key in its
  -- notes, so an event without one is somebody else's (e.g. the dashboard's), never ours.

  if v_old.id is null then
    insert into storeops.refunds
      (tenant_id, order_id, razorpay_payment_id, razorpay_refund_id, amount, currency, reason, status, source,
       processed_at, error)
    values
      (v_payment.tenant_id, v_payment.order_id, v_payment_id, v_refund_id, v_amount,
       coalesce(p_entity ->> 'currency', v_payment.currency), coalesce(v_notes ->> 'reason', v_notes ->> 'comment'),
       v_status, 'dashboard',
       case when v_status = 'processed' then p_event_at end,
       case when v_status = 'failed' then 'Razorpay reported the refund failed' end);
  else
    v_new := v_old;
    v_new.razorpay_refund_id := coalesce(v_old.razorpay_refund_id, v_refund_id);
    v_new.razorpay_payment_id := coalesce(v_old.razorpay_payment_id, v_payment_id);
    -- pending < failed < processed: Razorpay saying processed outranks our own inference of failure.
    if storeops_private.refund_status_rank(v_status) > storeops_private.refund_status_rank(v_old.status) then
      v_new.status := v_status;
    end if;
    if v_new.status = 'processed' and v_status = 'processed' then
      v_new.processed_at := least(v_new.processed_at, p_event_at);
    end if;
    if v_new.status = 'failed' then
      v_new.error := coalesce(v_new.error, 'Razorpay reported the refund failed');
    elsif v_new.status = 'processed' then
      v_new.error := null;
    end if;
    if v_new is not distinct from v_old then
      v_result.outcome := case when storeops_private.refund_status_rank(v_status) < storeops_private.refund_status_rank(v_old.status)
                        then 'stale' else 'duplicate' end;
      return v_result;
    end if;
    update storeops.refunds
    set razorpay_refund_id = v_new.razorpay_refund_id, razorpay_payment_id = v_new.razorpay_payment_id,
        status = v_new.status, processed_at = v_new.processed_at, error = v_new.error
    where id = v_old.id;
  end if;

  v_result.outcome := 'applied';
  v_result.order_id := v_payment.order_id;
  if p_settle then
    perform storeops_private.settle_orders(array[v_payment.order_id], p_now);
  end if;
  return v_result;
end
$$;
comment on function storeops_private.apply_refund_entity(storeops.payment_webhooks, jsonb, timestamptz, timestamptz, boolean) is
  'Merges a refund snapshot into refunds: updates our own refund (by rfnd id, or the idempotency key in its notes), else inserts a dashboard refund; defers when the payment is unknown.';

-- Apply one stored webhook row (the caller holds its lock). p_settle: settle its order now, else
-- the caller settles the order it names. p_record: write the outcome on the row now, else the caller does
-- (a deferred outcome is always written at once: the payment's arrival looks for it).
create function storeops_private.apply_payment_webhook_row(
  p_webhook storeops.payment_webhooks,
  p_now timestamptz,
  p_settle boolean,
  p_record boolean
) returns storeops_private.webhook_outcome
language plpgsql
as $$
declare
  v_result storeops_private.webhook_outcome;
  v_payload jsonb := p_webhook.payload;
  v_event_at timestamptz;
  v_deferred_payment_id text;
begin
  v_event_at := coalesce(to_timestamp((v_payload ->> 'created_at')::double precision), p_webhook.created_at);
  if p_webhook.webhook_type in ('payment.authorized', 'payment.captured', 'payment.failed', 'order.paid') then
    v_result := storeops_private.apply_payment_entity(p_webhook, v_payload #> '{payload,payment,entity}', v_event_at,
                                                      p_now, p_settle);
  elsif p_webhook.webhook_type in ('refund.created', 'refund.processed', 'refund.failed') then
    v_result := storeops_private.apply_refund_entity(p_webhook, v_payload #> '{payload,refund,entity}', v_event_at,
                                                     p_now, p_settle);
    if v_result.outcome = 'deferred' then
      v_deferred_payment_id := v_payload #>> '{payload,refund,entity,payment_id}';
    end if;
  else
    v_result.outcome := 'ignored';
  end if;

  if p_record or v_result.outcome = 'deferred' then
    update storeops.payment_webhooks
    set processed = v_result.outcome <> 'deferred',
        processed_at = case when v_result.outcome = 'deferred' then null else p_now end,
        outcome = v_result.outcome,
        error = null,
        deferred_payment_id = v_deferred_payment_id,
        tenant_id = coalesce(tenant_id, v_result.tenant_id)
    where id = p_webhook.id;
  end if;
  return v_result;
end
$$;
comment on function storeops_private.apply_payment_webhook_row(storeops.payment_webhooks, timestamptz, boolean, boolean) is
  'Applies one locked payment_webhooks row by event type; settles its order and records processed/outcome now or leaves both to the caller (a deferred refund stays unprocessed until its payment arrives).';

create function storeops.apply_payment_webhook(p_webhook_id uuid, p_now timestamptz default now()) returns text
language plpgsql
as $$
declare
  v_row storeops.payment_webhooks;
begin
  select * into v_row from storeops.payment_webhooks where id = p_webhook_id for update;
  if not found then
    raise exception 'payment webhook % does not exist', p_webhook_id using errcode = 'P0002';
  end if;
  if v_row.processed and v_row.outcome is distinct from 'deferred' then
    return 'duplicate';
  end if;
  return (storeops_private.apply_payment_webhook_row(v_row, p_now, true, true)).outcome;
end
$$;
comment on function storeops.apply_payment_webhook(uuid, timestamptz) is
  'Applies one stored Razorpay webhook, idempotently; marks it processed and returns the outcome: applied, duplicate, stale, deferred, unknown_order or ignored. Raises on a malformed event (the retry queue takes it).';

-- Plans: generic (planned once per session, not for every event), and no sequential scans:
-- statistics gathered while a table was still empty would otherwise have every lookup of a batch
-- scan the whole table once it has grown.
create function storeops.process_payment_webhooks(p_limit integer default 500, p_now timestamptz default now())
returns integer
language plpgsql
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
  v_ids uuid[];
  v_batch storeops.payment_webhooks[];
  v_orders uuid[];
  v_locked uuid[];
  v_ready boolean[];
  v_row storeops.payment_webhooks;
  v_result storeops_private.webhook_outcome;
  v_careful boolean := false;  -- false: the fast path; true: one subtransaction per event
  v_done_ids uuid[];
  v_done_outcomes text[];
  v_done_tenants uuid[];
  v_touched uuid[];
  v_failed_ids uuid[];
  v_failed_errors text[];
  v_handled integer;
begin
  -- Claim the oldest never-attempted rows, and find the order each one will lock.
  select coalesce(array_agg(id), '{}') into v_ids
  from (select id from storeops.payment_webhooks
        where not processed and attempts = 0 and deferred_payment_id is null
        order by created_at, id
        limit greatest(coalesce(p_limit, 500), 0)
        for update skip locked) claimed;
  if cardinality(v_ids) = 0 then
    return 0;
  end if;
  -- EXECUTE: planned for each batch with the tables' current sizes. A plan cached while
  -- razorpay_payments was still empty scans all of it for every webhook once it is not.
  execute $sql$
    select array_agg(w order by w.created_at, w.id),
           array_agg(coalesce(o.id, p.order_id) order by w.created_at, w.id)
    from storeops.payment_webhooks w
    left join storeops.orders o
      on o.razorpay_order_id = coalesce(w.payload #>> '{payload,payment,entity,order_id}',
                                        w.payload #>> '{payload,order,entity,id}')
    left join storeops.razorpay_payments p
      on o.id is null and p.razorpay_payment_id = w.payload #>> '{payload,refund,entity,payment_id}'
    where w.id = any ($1)
  $sql$ into v_batch, v_orders using v_ids;

  -- Lock those orders without waiting: an order another runner holds keeps its events for the next
  -- call. Only when every order is taken do we wait, in id order, so runners never deadlock.
  select coalesce(array_agg(id), '{}') into v_locked
  from (select id from storeops.orders where id = any (v_orders) order by id for update skip locked) s;
  select array_agg(u.order_id is null or l.id is not null order by u.n) into v_ready
  from unnest(v_orders) with ordinality as u(order_id, n)
  left join unnest(v_locked) as l(id) on l.id = u.order_id;
  if not (true = any (v_ready)) then
    perform 1 from storeops.orders where id = any (v_orders) order by id for update;
    v_ready := array_fill(true, array[cardinality(v_batch)]);
  end if;

  -- Fast path: merge every event, then settle the orders and mark the rows once, all in one
  -- subtransaction. No subtransaction per event: foreign-key checks from hundreds of them on the same
  -- tenant and order rows would pile up multixacts. Any error undoes the attempt, and the batch is
  -- redone the careful way: one subtransaction per event, each settling its own order, so only the
  -- bad event fails.
  loop
    v_done_ids := '{}'; v_done_outcomes := '{}'; v_done_tenants := '{}'; v_touched := '{}';
    v_failed_ids := '{}'; v_failed_errors := '{}'; v_handled := 0;
    begin
      for i in 1 .. cardinality(v_batch) loop
        continue when not v_ready[i];
        v_row := v_batch[i];
        v_handled := v_handled + 1;
        if not v_careful then
          v_result := storeops_private.apply_payment_webhook_row(v_row, p_now, false, false);
          if v_result.outcome <> 'deferred' then
            v_done_ids := v_done_ids || v_row.id;
            v_done_outcomes := v_done_outcomes || v_result.outcome;
            v_done_tenants := v_done_tenants || v_result.tenant_id;
          end if;
          if v_result.order_id is not null then
            v_touched := v_touched || v_result.order_id;
          end if;
        else
          begin
            perform storeops_private.apply_payment_webhook_row(v_row, p_now, true, true);
          exception when others then
            v_failed_ids := v_failed_ids || v_row.id;
            v_failed_errors := v_failed_errors || sqlerrm;
          end;
        end if;
      end loop;
      if not v_careful then
        perform storeops_private.settle_orders(v_touched, p_now);
        update storeops.payment_webhooks w
        set processed = true, processed_at = p_now, outcome = d.outcome, error = null,
            tenant_id = coalesce(w.tenant_id, d.tenant_id)
        from unnest(v_done_ids, v_done_outcomes, v_done_tenants) as d(id, outcome, tenant_id)
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
    v_row := null;
    select * into v_row from storeops.payment_webhooks where id = v_failed_ids[i];
    update storeops.payment_webhooks set error = v_failed_errors[i], attempts = attempts + 1 where id = v_row.id;
    perform storeops.schedule_operation_retry(v_row.tenant_id, 'payment_webhook', v_row.id,
                                              jsonb_build_object('webhook_id', v_row.id), v_failed_errors[i], p_now);
  end loop;
  return v_handled;
end
$$;
comment on function storeops.process_payment_webhooks(integer, timestamptz) is
  'Applies up to p_limit unprocessed, never-attempted Razorpay webhooks oldest first (SKIP LOCKED; orders settled once per batch; a batch with a bad event is redone one subtransaction per event); a failure stores error, bumps attempts and schedules a payment_webhook retry. Returns rows handled; call until 0.';

revoke execute on all functions in schema storeops from public;
grant execute on all functions in schema storeops to storeops_runner;
grant execute on function storeops.current_tenant_id() to storeops_tenant;
