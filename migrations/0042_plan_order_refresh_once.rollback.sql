-- Back to 0011's definition: LANGUAGE sql, planned on every call.
create or replace function storeops_private.refresh_order_payment_state(p_order_ids uuid[]) returns void
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
