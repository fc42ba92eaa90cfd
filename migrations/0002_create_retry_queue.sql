-- Why: operations that fail (a webhook that could not be applied, a refund Razorpay did not answer,
-- a domain whose DNS is not there yet) are retried with exponential backoff: 5, 10, 20, 40, 80
-- minutes, then `failed`. One live row per operation is a partial unique index, not a hope.
-- Runners claim due rows with FOR UPDATE SKIP LOCKED and a lease: a claim token that complete and
-- fail must present, so a stale runner cannot overwrite a newer claim, and an expired lease makes a
-- crashed runner's work claimable again.
-- depends: 0001_create_schema_roles_tenants

create table storeops.operation_retry_policies (
  operation_type text not null,
  max_attempts integer not null,
  base_delay interval not null default interval '5 minutes',
  constraint operation_retry_policies_pkey primary key (operation_type),
  constraint operation_retry_policies_max_attempts_positive check (max_attempts between 1 and 100),
  constraint operation_retry_policies_base_delay_positive check (base_delay > interval '0')
);
comment on table storeops.operation_retry_policies is
  'Per operation type overrides of the retry schedule; types without a row get 5 attempts from a 5 minute base.';
alter table storeops.operation_retry_policies enable row level security;
revoke all on storeops.operation_retry_policies from public;
grant select on storeops.operation_retry_policies to storeops_runner;
create policy operation_retry_policies_runner_select on storeops.operation_retry_policies
  for select to storeops_runner using (true);

create sequence storeops.operation_claim_token_seq;
comment on sequence storeops.operation_claim_token_seq is 'Claim tokens: each claim of a retry row gets a new one.';
grant usage on sequence storeops.operation_claim_token_seq to storeops_runner;

create table storeops.operation_retry_queue (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid,
  operation_type text not null,
  operation_id uuid not null,
  payload jsonb not null default '{}'::jsonb,
  -- pending: waiting for next_retry_at; processing: claimed under a lease; completed; failed: gave up.
  status text not null default 'pending',
  attempts integer not null default 0,
  max_attempts integer not null default 5,
  next_retry_at timestamptz not null default now(),
  last_error text,
  errors jsonb not null default '[]'::jsonb,
  locked_by text,
  locked_until timestamptz,
  claim_token bigint,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  completed_at timestamptz,
  constraint operation_retry_queue_pkey primary key (id),
  constraint operation_retry_queue_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade,
  constraint operation_retry_queue_status_known check (status in ('pending', 'processing', 'completed', 'failed')),
  constraint operation_retry_queue_attempts_in_range check (attempts >= 0 and attempts <= max_attempts),
  constraint operation_retry_queue_max_attempts_positive check (max_attempts >= 1),
  constraint operation_retry_queue_type_not_blank check (btrim(operation_type) <> ''),
  constraint operation_retry_queue_lease_when_processing check (
    status <> 'processing' or (locked_until is not null and claim_token is not null))
) with (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000);
comment on table storeops.operation_retry_queue is
  'Retries with backoff 5*2^(n-1) minutes; one live (pending/processing) row per (tenant, type, operation). errors keeps every failure.';

create unique index operation_retry_queue_one_live_idx on storeops.operation_retry_queue
  (coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid), operation_type, operation_id)
  where status in ('pending', 'processing');
create index operation_retry_queue_due_idx on storeops.operation_retry_queue (next_retry_at)
  where status = 'pending';
create index operation_retry_queue_lease_idx on storeops.operation_retry_queue (locked_until)
  where status = 'processing';
create index operation_retry_queue_tenant_idx on storeops.operation_retry_queue (tenant_id);
create index operation_retry_queue_type_status_idx on storeops.operation_retry_queue (operation_type, status);
create trigger operation_retry_queue_set_updated_at before update on storeops.operation_retry_queue
  for each row execute function storeops_private.set_updated_at();
select storeops_private.enable_tenant_rls('storeops.operation_retry_queue', 'tenant_id', array['select']);

create function storeops.get_max_attempts(p_operation_type text) returns integer
language sql stable
as $$
  select coalesce((select max_attempts from storeops.operation_retry_policies where operation_type = p_operation_type), 5)
$$;
comment on function storeops.get_max_attempts(text) is 'How many attempts an operation type gets: its policy row, else 5.';

create function storeops.get_retry_delay(p_operation_type text, p_attempt integer) returns interval
language sql stable
as $$
  select coalesce((select base_delay from storeops.operation_retry_policies where operation_type = p_operation_type),
                  interval '5 minutes') * power(2, greatest(p_attempt, 1) - 1)::integer
$$;
comment on function storeops.get_retry_delay(text, integer) is 'Backoff before retry n: base * 2^(n-1), i.e. 5, 10, 20, 40, 80 minutes by default.';

-- The n-th call for the same live operation (n = 1 .. max_attempts) schedules retry n at
-- now + 5 min * 2^(n-1); the call after that marks the row failed. Returns the row.
create function storeops.schedule_operation_retry(
  p_tenant_id uuid,
  p_operation_type text,
  p_operation_id uuid,
  p_payload jsonb,
  p_error text,
  p_now timestamptz default now()
) returns storeops.operation_retry_queue
language plpgsql
as $$
declare
  v_row storeops.operation_retry_queue;
  v_max integer;
  v_tries integer := 0;
begin
  if p_operation_type is null or btrim(p_operation_type) = '' then
    raise exception 'schedule_operation_retry: operation_type is required' using errcode = '22004';
  end if;
  if p_operation_id is null then
    raise exception 'schedule_operation_retry: operation_id is required' using errcode = '22004';
  end if;
  v_max := storeops.get_max_attempts(p_operation_type);

  -- Either count this call on the live row, or start one. A concurrent caller may insert the live
  -- row first (unique_violation) or fail it while we wait for its lock (the re-checked row no
  -- longer matches): both times look again, so no call is ever lost.
  loop
    select * into v_row from storeops.operation_retry_queue
    where coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)
            = coalesce(p_tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)
      and operation_type = p_operation_type and operation_id = p_operation_id
      and status in ('pending', 'processing')
    for update;
    if found then
      return storeops_private.record_operation_failure(v_row, p_error, null, p_payload, p_now);
    end if;
    begin
      insert into storeops.operation_retry_queue
        (tenant_id, operation_type, operation_id, payload, status, attempts, max_attempts,
         next_retry_at, last_error, errors)
      values
        (p_tenant_id, p_operation_type, p_operation_id, coalesce(p_payload, '{}'::jsonb), 'pending', 1, v_max,
         p_now + storeops.get_retry_delay(p_operation_type, 1), p_error,
         jsonb_build_array(jsonb_build_object('attempt', 1, 'at', p_now, 'error', p_error)))
      returning * into v_row;
      return v_row;
    exception when unique_violation then
      -- Another caller's live row committed first: loop and count this call on it. Under
      -- REPEATABLE READ that row stays invisible, so give up with a retryable error.
      v_tries := v_tries + 1;
      if v_tries >= 3 then
        raise exception 'schedule_operation_retry: a concurrent call created this operation''s live row; retry the transaction'
          using errcode = '40001';
      end if;
    end;
  end loop;
end
$$;
comment on function storeops.schedule_operation_retry(uuid, text, uuid, jsonb, text, timestamptz) is
  'Counts a failure of an operation: schedules retry n at 5*2^(n-1) minutes, or marks it failed after max_attempts. Never duplicates a live row.';

-- Shared by schedule_operation_retry and fail_operation_retry: count one more failure on a live row.
create function storeops_private.record_operation_failure(
  p_row storeops.operation_retry_queue,
  p_error text,
  p_retry_in interval,
  p_payload jsonb,
  p_now timestamptz
) returns storeops.operation_retry_queue
language plpgsql
as $$
declare
  v_row storeops.operation_retry_queue;
  v_attempt integer := p_row.attempts + 1;
begin
  if p_row.attempts >= p_row.max_attempts then
    update storeops.operation_retry_queue
    set status = 'failed', last_error = p_error, locked_by = null, locked_until = null,
        completed_at = p_now,
        errors = errors || jsonb_build_array(jsonb_build_object('attempt', v_attempt, 'at', p_now, 'error', p_error, 'final', true))
    where id = p_row.id
    returning * into v_row;
    perform pg_notify('storeops_alert', json_build_object(
      'kind', 'operation_failed', 'id', v_row.id, 'operation_type', v_row.operation_type,
      'operation_id', v_row.operation_id, 'error', p_error)::text);
  else
    update storeops.operation_retry_queue
    set status = 'pending', attempts = v_attempt, last_error = p_error,
        payload = coalesce(p_payload, payload),
        next_retry_at = p_now + coalesce(p_retry_in, storeops.get_retry_delay(operation_type, v_attempt)),
        locked_by = null, locked_until = null,
        errors = errors || jsonb_build_array(jsonb_build_object('attempt', v_attempt, 'at', p_now, 'error', p_error))
    where id = p_row.id
    returning * into v_row;
  end if;
  return v_row;
end
$$;
comment on function storeops_private.record_operation_failure(storeops.operation_retry_queue, text, interval, jsonb, timestamptz) is
  'One more failure on a live retry row: next backoff step, or failed (with an alert notification) when attempts are used up.';

-- Work to run as soon as a runner is free (attempt 0, not a retry). Idempotent per live operation.
create function storeops.enqueue_operation(
  p_tenant_id uuid,
  p_operation_type text,
  p_operation_id uuid,
  p_payload jsonb default '{}'::jsonb,
  p_run_at timestamptz default now()
) returns uuid
language plpgsql
as $$
declare
  v_id uuid;
begin
  insert into storeops.operation_retry_queue
    (tenant_id, operation_type, operation_id, payload, attempts, max_attempts, next_retry_at)
  values
    (p_tenant_id, p_operation_type, p_operation_id, coalesce(p_payload, '{}'::jsonb), 0,
     storeops.get_max_attempts(p_operation_type), p_run_at)
  on conflict do nothing
  returning id into v_id;
  if v_id is null then
    select id into v_id from storeops.operation_retry_queue
    where coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)
            = coalesce(p_tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)
      and operation_type = p_operation_type and operation_id = p_operation_id
      and status in ('pending', 'processing');
  end if;
  perform pg_notify('storeops_work', p_operation_type);
  return v_id;
end
$$;
comment on function storeops.enqueue_operation(uuid, text, uuid, jsonb, timestamptz) is
  'Queues an operation to run at p_run_at (default now) without counting a failure; returns the live row id.';

-- Due rows, oldest first. Read-only: safe to run from a runbook.
create function storeops.get_pending_retries(p_limit integer default 100)
returns setof storeops.operation_retry_queue
language sql stable
as $$
  select *
  from storeops.operation_retry_queue
  where (status = 'pending' and next_retry_at <= now())
     or (status = 'processing' and locked_until < now())
  order by next_retry_at, id
  limit greatest(coalesce(p_limit, 100), 0)
$$;
comment on function storeops.get_pending_retries(integer) is
  'Due retries (and expired leases), oldest first. Read-only; runners claim with claim_operation_retries instead.';

create function storeops.claim_operation_retries(
  p_worker text,
  p_limit integer default 10,
  p_lease interval default interval '5 minutes',
  p_operation_types text[] default null,
  p_now timestamptz default now()
) returns setof storeops.operation_retry_queue
language plpgsql
as $$
begin
  if p_worker is null or btrim(p_worker) = '' then
    raise exception 'claim_operation_retries: a worker name is required (release_operation_retries gives back by it)'
      using errcode = '22004';
  end if;
  if p_limit is null or p_limit < 1 then
    raise exception 'claim_operation_retries: limit must not be negative or zero, got %', coalesce(p_limit::text, 'NULL')
      using errcode = '22023';
  end if;
  if p_lease is null or p_lease <= interval '0' then
    raise exception 'claim_operation_retries: the lease must be a positive interval, got %', coalesce(p_lease::text, 'NULL')
      using errcode = '22023';
  end if;
  return query
  -- SKIP LOCKED sits under each LIMIT, so rows another runner is claiming right now are replaced
  -- by the next due ones instead of making the queue look empty.
  with due_pending as materialized (
    select id, next_retry_at as due_at from storeops.operation_retry_queue
    where status = 'pending' and next_retry_at <= p_now
      and (p_operation_types is null or operation_type = any (p_operation_types))
    order by next_retry_at
    limit p_limit
    for update skip locked
  ), lease_expired as materialized (
    select id, locked_until as due_at from storeops.operation_retry_queue
    where status = 'processing' and locked_until < p_now
      and (p_operation_types is null or operation_type = any (p_operation_types))
    order by locked_until
    limit p_limit
    for update skip locked
  ), chosen as (
    select id from (select * from due_pending union all select * from lease_expired) candidates
    order by due_at
    limit p_limit
  )
  update storeops.operation_retry_queue q
  set status = 'processing', locked_by = p_worker, locked_until = p_now + p_lease,
      claim_token = nextval('storeops.operation_claim_token_seq')
  from chosen
  where q.id = chosen.id
  returning q.*;
end
$$;
comment on function storeops.claim_operation_retries(text, integer, interval, text[], timestamptz) is
  'Claims up to p_limit due rows (FOR UPDATE SKIP LOCKED) under a lease; an expired lease is claimable again. Returns rows with their claim_token.';

create function storeops.complete_operation_retry(p_id uuid, p_claim_token bigint, p_now timestamptz default now())
returns boolean
language plpgsql
as $$
begin
  update storeops.operation_retry_queue
  set status = 'completed', completed_at = p_now, locked_by = null, locked_until = null
  where id = p_id and claim_token = p_claim_token and status = 'processing';
  return found;
end
$$;
comment on function storeops.complete_operation_retry(uuid, bigint, timestamptz) is
  'Marks a claimed row completed if the claim token is still the current one; false means the claim was lost.';

create function storeops.complete_operation_retries(p_ids uuid[], p_claim_tokens bigint[], p_now timestamptz default now())
returns integer
language plpgsql
as $$
declare
  v_count integer;
begin
  update storeops.operation_retry_queue q
  set status = 'completed', completed_at = p_now, locked_by = null, locked_until = null
  from unnest(p_ids, p_claim_tokens) as done(id, claim_token)
  where q.id = done.id and q.claim_token = done.claim_token and q.status = 'processing';
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function storeops.complete_operation_retries(uuid[], bigint[], timestamptz) is
  'Batch form of complete_operation_retry; returns how many claims were still current.';

create function storeops.fail_operation_retry(
  p_id uuid,
  p_claim_token bigint,
  p_error text,
  p_retry_in interval default null,
  p_now timestamptz default now()
) returns storeops.operation_retry_queue
language plpgsql
as $$
declare
  v_row storeops.operation_retry_queue;
begin
  select * into v_row from storeops.operation_retry_queue
  where id = p_id and claim_token = p_claim_token and status = 'processing'
  for update;
  if not found then
    return null;
  end if;
  return storeops_private.record_operation_failure(v_row, p_error, p_retry_in, null, p_now);
end
$$;
comment on function storeops.fail_operation_retry(uuid, bigint, text, interval, timestamptz) is
  'Reports a failed claim: schedules the next backoff step (or p_retry_in, e.g. a Retry-After) or marks it failed. NULL if the claim was lost.';

create function storeops.release_operation_retries(p_worker text) returns integer
language plpgsql
as $$
declare
  v_count integer;
begin
  update storeops.operation_retry_queue
  set status = 'pending', locked_by = null, locked_until = null
  where status = 'processing' and locked_by = p_worker;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function storeops.release_operation_retries(text) is
  'Gives back every claim a worker holds without counting an attempt (graceful shutdown).';

revoke execute on all functions in schema storeops from public;
grant execute on all functions in schema storeops to storeops_runner;
grant execute on function storeops.current_tenant_id() to storeops_tenant;
