-- Why: what the runner, pg_cron and psql share beyond the domain state machines:
--   alerts           failed operations and reconciliation mismatches, raised by triggers so that
--                    every writer (runner, pg_cron, a person in psql) raises them, and delivered once
--                    across any number of runners (claimed with SKIP LOCKED).
--   scheduler_ticks  one row per (job, tick): the runner that inserts it runs the job, so several
--                    runners never run one tick twice, with no session state (PgBouncer-safe).
--   cleanup          processed webhooks older than 90 days deleted in small committed batches;
--                    unprocessed ones are kept however old.
--   SQL retries      webhook re-application needs no network, so pg_cron can drive it too.
-- depends: 0006_create_health_checks 0004_create_shipping 0005_create_domains

create table storeops.alerts (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid,
  -- operation_failed, reconciliation_mismatch, reconciliation_stale, health_down
  kind text not null,
  details jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  delivered_at timestamptz,
  claimed_by text,
  claimed_until timestamptz,
  constraint alerts_pkey primary key (id),
  constraint alerts_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade,
  constraint alerts_kind_not_blank check (btrim(kind) <> '')
);
comment on table storeops.alerts is
  'Alerts for operators: raised by triggers, delivered by one runner (error log, metric, optional Slack-compatible POST).';
create index alerts_undelivered_idx on storeops.alerts (created_at) where delivered_at is null;
create index alerts_tenant_idx on storeops.alerts (tenant_id);
select storeops_private.enable_tenant_rls('storeops.alerts', 'tenant_id', array['select']);

create function storeops.raise_alert(p_kind text, p_tenant_id uuid, p_details jsonb) returns uuid
language plpgsql
as $$
declare
  v_id uuid;
begin
  insert into storeops.alerts (kind, tenant_id, details) values (p_kind, p_tenant_id, coalesce(p_details, '{}'))
  returning id into v_id;
  perform pg_notify('storeops_alert', v_id::text);
  return v_id;
end
$$;
comment on function storeops.raise_alert(text, uuid, jsonb) is
  'Records an alert and wakes the runners; delivery happens once, through claim_alerts.';

create function storeops_private.alert_on_operation_failed() returns trigger
language plpgsql
as $$
begin
  if new.status = 'failed' and (tg_op = 'INSERT' or old.status is distinct from 'failed') then
    perform storeops.raise_alert('operation_failed', new.tenant_id, jsonb_build_object(
      'retry_id', new.id, 'operation_type', new.operation_type, 'operation_id', new.operation_id,
      'attempts', new.attempts, 'error', new.last_error));
  end if;
  return new;
end
$$;
comment on function storeops_private.alert_on_operation_failed() is
  'An operation that gives up raises an alert whoever marked it failed.';
create trigger operation_retry_queue_alert_failed after insert or update of status on storeops.operation_retry_queue
  for each row execute function storeops_private.alert_on_operation_failed();

create function storeops_private.alert_on_reconciliation_mismatch() returns trigger
language plpgsql
as $$
begin
  if new.status = 'mismatch' and (tg_op = 'INSERT' or old.status is distinct from 'mismatch') then
    perform storeops.raise_alert('reconciliation_mismatch', new.tenant_id, jsonb_build_object(
      'reconciliation_id', new.id, 'order_id', new.order_id, 'razorpay_payment_id', new.razorpay_payment_id,
      'reason', new.reason, 'expected_amount', new.expected_amount, 'received_amount', new.received_amount,
      'currency', new.currency));
  end if;
  return new;
end
$$;
comment on function storeops_private.alert_on_reconciliation_mismatch() is
  'A payment that does not match its order raises an alert, from whichever writer found it.';
create trigger payment_reconciliation_alert_mismatch after insert or update of status on storeops.payment_reconciliation
  for each row execute function storeops_private.alert_on_reconciliation_mismatch();

create function storeops.claim_alerts(p_worker text, p_limit integer default 50, p_lease interval default interval '1 minute',
                                      p_now timestamptz default now())
returns setof storeops.alerts
language plpgsql
as $$
begin
  if p_worker is null or btrim(p_worker) = '' then
    raise exception 'claim_alerts: a worker name is required' using errcode = '22004';
  end if;
  if p_limit is null or p_limit < 1 or p_lease is null or p_lease <= interval '0' then
    raise exception 'claim_alerts: limit must not be negative or zero, and the lease must be a positive interval' using errcode = '22023';
  end if;
  return query
  update storeops.alerts a
  set claimed_by = p_worker, claimed_until = p_now + p_lease
  where a.id in (
    select id from storeops.alerts
    where delivered_at is null and (claimed_until is null or claimed_until < p_now)
    order by created_at
    limit p_limit
    for update skip locked)
  returning a.*;
end
$$;
comment on function storeops.claim_alerts(text, integer, interval, timestamptz) is
  'Claims undelivered alerts for one runner (lease; an expired one is claimable again).';

create function storeops.mark_alerts_delivered(p_ids uuid[], p_now timestamptz default now()) returns integer
language plpgsql
as $$
declare
  v_count integer;
begin
  update storeops.alerts set delivered_at = p_now, claimed_until = null where id = any (p_ids) and delivered_at is null;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function storeops.mark_alerts_delivered(uuid[], timestamptz) is 'Closes alerts once logged (and posted, or queued for posting).';

create table storeops.scheduler_ticks (
  job text not null,
  tick_at timestamptz not null,
  runner text not null,
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  outcome text,
  constraint scheduler_ticks_pkey primary key (job, tick_at)
);
comment on table storeops.scheduler_ticks is
  'Which runner ran which tick of each scheduled job; the primary key makes one runner per tick.';
create index scheduler_ticks_started_idx on storeops.scheduler_ticks (started_at);
alter table storeops.scheduler_ticks enable row level security;
revoke all on storeops.scheduler_ticks from public;
grant select, insert, update, delete on storeops.scheduler_ticks to storeops_runner;
create policy scheduler_ticks_runner_select on storeops.scheduler_ticks for select to storeops_runner using (true);
create policy scheduler_ticks_runner_insert on storeops.scheduler_ticks for insert to storeops_runner with check (true);
create policy scheduler_ticks_runner_update on storeops.scheduler_ticks for update to storeops_runner using (true) with check (true);
create policy scheduler_ticks_runner_delete on storeops.scheduler_ticks for delete to storeops_runner using (true);

create function storeops.claim_scheduler_tick(p_job text, p_every interval, p_runner text, p_now timestamptz default now())
returns timestamptz
language plpgsql
as $$
declare
  v_tick timestamptz := date_bin(p_every, p_now, timestamptz '2000-01-01 00:00:00+00');
begin
  insert into storeops.scheduler_ticks (job, tick_at, runner, started_at) values (p_job, v_tick, p_runner, p_now)
  on conflict do nothing;
  if found then
    return v_tick;
  end if;
  return null;
end
$$;
comment on function storeops.claim_scheduler_tick(text, interval, text, timestamptz) is
  'The current tick of a job if this runner is the first to claim it, else NULL: one runner per tick.';

create function storeops.finish_scheduler_tick(p_job text, p_tick timestamptz, p_outcome text, p_now timestamptz default now())
returns void
language sql
as $$
  update storeops.scheduler_ticks set finished_at = p_now, outcome = left(p_outcome, 500)
  where job = p_job and tick_at = p_tick
$$;
comment on function storeops.finish_scheduler_tick(text, timestamptz, text, timestamptz) is 'Records how a scheduled job run ended.';

-- One batch of the weekly cleanup. Short: a bounded DELETE by primary key, SKIP LOCKED so it never
-- waits on (or blocks) the worker, which only touches unprocessed rows anyway.
create function storeops.delete_processed_webhooks(p_table text, p_older_than interval default interval '90 days',
                                                   p_limit integer default 5000, p_now timestamptz default now())
returns integer
language plpgsql
as $$
declare
  v_count integer;
begin
  if p_older_than is null or p_older_than < interval '0' then
    raise exception 'delete_processed_webhooks: the age must be a non-negative interval, got %',
      coalesce(p_older_than::text, 'NULL') using errcode = '22023';
  end if;
  if p_limit is null or p_limit < 1 then
    raise exception 'delete_processed_webhooks: limit must not be negative or zero, got %', coalesce(p_limit::text, 'NULL')
      using errcode = '22023';
  end if;
  if p_table = 'payment_webhooks' then
    delete from storeops.payment_webhooks w using (
      select id from storeops.payment_webhooks
      where processed and created_at < p_now - p_older_than
      limit p_limit for update skip locked) old
    where w.id = old.id;
  elsif p_table = 'shipping_webhooks' then
    delete from storeops.shipping_webhooks w using (
      select id from storeops.shipping_webhooks
      where processed and created_at < p_now - p_older_than
      limit p_limit for update skip locked) old
    where w.id = old.id;
  else
    raise exception 'delete_processed_webhooks: unknown table %', p_table using errcode = '22023',
      hint = 'use payment_webhooks or shipping_webhooks';
  end if;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function storeops.delete_processed_webhooks(text, interval, integer, timestamptz) is
  'Deletes one batch of processed webhooks older than p_older_than; never an unprocessed one.';

-- The weekly job: batches committed one by one (CALL it outside a transaction block).
create procedure storeops.cleanup_old_webhooks(p_older_than interval default interval '90 days',
                                               p_batch integer default 5000)
language plpgsql
as $$
declare
  v_table text;
  v_deleted integer;
begin
  foreach v_table in array array['payment_webhooks', 'shipping_webhooks'] loop
    loop
      v_deleted := storeops.delete_processed_webhooks(v_table, p_older_than, p_batch);
      commit;
      exit when v_deleted < p_batch;
    end loop;
  end loop;
  delete from storeops.scheduler_ticks where started_at < now() - interval '30 days';
  commit;
end
$$;
comment on procedure storeops.cleanup_old_webhooks(interval, integer) is
  'Weekly cleanup in committed batches (no long locks); keeps unprocessed webhooks however old.';

-- Daily review: open mismatches and pending reconciliations older than a day raise one alert, and
-- so do refund events still waiting for a payment that never arrived (deferred for over a day).
create function storeops.review_reconciliation(p_now timestamptz default now()) returns integer
language plpgsql
as $$
declare
  v_count integer;
  v_waiting integer;
begin
  select count(*) into v_count from storeops.payment_reconciliation
  where status in ('pending', 'mismatch') and created_at < p_now - interval '1 day';
  if v_count > 0 then
    perform storeops.raise_alert('reconciliation_stale', null, jsonb_build_object('open_older_than_1_day', v_count));
  end if;
  select count(*) into v_waiting from storeops.payment_webhooks
  where not processed and deferred_payment_id is not null and created_at < p_now - interval '1 day';
  if v_waiting > 0 then
    perform storeops.raise_alert('refund_waiting_for_payment', null,
      jsonb_build_object('deferred_older_than_1_day', v_waiting));
  end if;
  return v_count + v_waiting;
end
$$;
comment on function storeops.review_reconciliation(timestamptz) is
  'The seed''s daily reconciliation review: alerts on pending/mismatch rows older than a day and on refund events still waiting for their payment after a day. Returns how many rows need a person.';

-- Webhook retries need no network: apply them in SQL (the runner and pg_cron both call this).
create function storeops.run_webhook_retries(p_worker text default 'sql', p_limit integer default 500,
                                             p_now timestamptz default now())
returns integer
language plpgsql
as $$
declare
  v_row storeops.operation_retry_queue;
  v_count integer := 0;
  v_id uuid;
begin
  for v_row in select * from storeops.claim_operation_retries(p_worker, p_limit, interval '5 minutes',
                                                              array['payment_webhook', 'shipping_webhook'], p_now) loop
    v_id := coalesce((v_row.payload ->> 'webhook_id')::uuid, v_row.operation_id);
    begin
      -- Each apply function marks its webhook processed itself (or leaves a refund that waits for
      -- its payment deferred, and so unprocessed).
      if v_row.operation_type = 'payment_webhook' then
        perform storeops.apply_payment_webhook(v_id, p_now);
      else
        perform storeops.apply_shipping_webhook(v_id, p_now);
      end if;
      perform storeops.complete_operation_retry(v_row.id, v_row.claim_token, p_now);
    exception when others then
      perform storeops.fail_operation_retry(v_row.id, v_row.claim_token, sqlerrm, null, p_now);
      if v_row.operation_type = 'payment_webhook' then
        update storeops.payment_webhooks set error = sqlerrm, attempts = attempts + 1 where id = v_id;
      else
        update storeops.shipping_webhooks set error = sqlerrm, attempts = attempts + 1 where id = v_id;
      end if;
    end;
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function storeops.run_webhook_retries(text, integer, timestamptz) is
  'Claims due payment_webhook/shipping_webhook retries and re-applies them in SQL; failures step the backoff.';

revoke execute on all functions in schema storeops from public;
grant execute on all functions in schema storeops to storeops_runner;
grant execute on function storeops.current_tenant_id() to storeops_tenant;
revoke execute on procedure storeops.cleanup_old_webhooks(interval, integer) from public;
grant execute on procedure storeops.cleanup_old_webhooks(interval, integer) to storeops_runner;
