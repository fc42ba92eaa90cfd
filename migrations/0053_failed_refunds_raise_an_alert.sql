-- Why: a refund that fails (Razorpay refuses it when asked, or reports it failed later through a
-- refund.failed webhook or missed-webhook recovery) was only marked failed on the refund and the
-- order: the customer has not been paid back and nobody was told. Now it raises a refund_failed
-- alert (a log line, a metric and STOREOPS_ALERT_URL, as every alert), once, from whichever writer
-- marked it failed, as operation_failed and reconciliation_mismatch do. A refund that later turns
-- out processed after all (processed outranks failed) raises nothing more.
-- depends: 0052_at_risk_domains_fail_after_a_grace

create function storeops_private.alert_on_refund_failed()
returns trigger
language plpgsql
as $$
begin
  if new.status = 'failed' and (tg_op = 'INSERT' or old.status is distinct from 'failed') then
    perform storeops.raise_alert('refund_failed', new.tenant_id, jsonb_build_object(
      'refund_id', new.id, 'order_id', new.order_id, 'razorpay_refund_id', new.razorpay_refund_id,
      'razorpay_payment_id', new.razorpay_payment_id, 'amount', new.amount, 'currency', new.currency,
      'source', new.source, 'error', new.error));
  end if;
  return new;
end
$$;

comment on function storeops_private.alert_on_refund_failed() is
  'A refund that fails raises a refund_failed alert, whoever marked it failed.';

create trigger refunds_alert_failed
  after insert or update of status on storeops.refunds
  for each row
  execute function storeops_private.alert_on_refund_failed();
