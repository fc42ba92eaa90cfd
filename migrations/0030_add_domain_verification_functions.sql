-- Why: DNS and TLS checks run in the runner, but what a result *means* for a domain lives here, so
-- the runner, pg_cron and a person in psql get the same state machine: every attempt is logged,
-- a never-verified domain is retried through the retry queue (5, 10, 20 ... minutes) until it
-- verifies or gives up, and a verified domain is only flagged at_risk after two definitive
-- failures in a row (NXDOMAIN, record gone or changed); a timeout or SERVFAIL says nothing about
-- the customer's records, so it is retried and never demotes a domain.
-- depends: 0005_create_domains

alter table storeops.domain_verification_logs add column definitive boolean;
comment on column storeops.domain_verification_logs.definitive is
  'For failures: true when DNS answered (NXDOMAIN, record missing or wrong), false for timeouts/SERVFAIL/network errors.';
comment on column storeops.custom_domains.consecutive_failures is
  'Definitive verification failures in a row; a success resets it, a timeout or SERVFAIL leaves it unchanged.';

alter table storeops.domain_verification_logs
  add constraint domain_verification_logs_duration_not_negative check (duration_ms is null or duration_ms >= 0),
  add constraint domain_verification_logs_error_when_failed check (success or error is not null);

-- Verified domains are re-checked by age; the auto_verify index from 0005 covers the rest.
create index custom_domains_recheck_idx on storeops.custom_domains (last_checked_at nulls first)
  where status in ('verified', 'at_risk');

create function storeops.record_domain_verification(
  p_domain_id uuid,
  p_success boolean,
  p_definitive boolean,
  p_error text,
  p_dns_records jsonb,
  p_duration_ms integer default null,
  p_now timestamptz default now()
) returns storeops.custom_domains
language plpgsql
as $$
declare
  v_domain storeops.custom_domains;
  v_retry storeops.operation_retry_queue;
  v_status text;
  v_failures integer;
  v_error text := coalesce(nullif(btrim(p_error), ''), case when p_success then null else 'verification failed' end);
begin
  if p_success is null then
    raise exception 'record_domain_verification: success must be true or false' using errcode = '22004';
  end if;
  select * into v_domain from storeops.custom_domains where id = p_domain_id for update;
  if not found then
    raise exception 'custom domain % does not exist', p_domain_id
      using errcode = 'P0002', hint = 'list domains with: select id, domain from storeops.custom_domains';
  end if;

  insert into storeops.domain_verification_logs
    (domain_id, tenant_id, success, definitive, error, dns_records, duration_ms, verified_at)
  values
    (v_domain.id, v_domain.tenant_id, p_success, case when p_success then null else coalesce(p_definitive, false) end,
     case when p_success then null else v_error end, coalesce(p_dns_records, '[]'::jsonb),
     greatest(p_duration_ms, 0), p_now);

  if p_success then
    update storeops.operation_retry_queue
    set status = 'completed', completed_at = p_now, locked_by = null, locked_until = null
    where tenant_id = v_domain.tenant_id and operation_type = 'domain_verify'
      and operation_id = v_domain.id and status in ('pending', 'processing');

    update storeops.custom_domains
    set status = 'verified', verification_attempts = verification_attempts + 1,
        last_verification_error = null, last_checked_at = p_now, last_verified_at = p_now,
        consecutive_failures = 0
    where id = v_domain.id
    returning * into v_domain;
    return v_domain;
  end if;

  v_failures := v_domain.consecutive_failures + case when coalesce(p_definitive, false) then 1 else 0 end;
  v_retry := storeops.schedule_operation_retry(
    v_domain.tenant_id, 'domain_verify', v_domain.id,
    jsonb_build_object('domain_id', v_domain.id, 'domain', v_domain.domain), v_error, p_now);

  if v_domain.status in ('verified', 'at_risk') then
    -- Once verified, only definitive evidence demotes: two definitive failures in a row.
    v_status := case when v_failures >= 2 then 'at_risk' else v_domain.status end;
  else
    -- Never verified: keep trying on the retry schedule; give up when the queue does.
    v_status := case when v_retry.status = 'failed' then 'failed' else 'pending' end;
  end if;

  if v_status in ('at_risk', 'failed') and v_domain.status <> v_status then
    perform pg_notify('storeops_alert', json_build_object(
      'kind', 'domain_' || v_status, 'domain_id', v_domain.id, 'tenant_id', v_domain.tenant_id,
      'domain', v_domain.domain, 'error', v_error)::text);
  end if;

  update storeops.custom_domains
  set status = v_status, verification_attempts = verification_attempts + 1,
      last_verification_error = v_error, last_checked_at = p_now, consecutive_failures = v_failures
  where id = v_domain.id
  returning * into v_domain;
  return v_domain;
end
$$;
comment on function storeops.record_domain_verification(uuid, boolean, boolean, text, jsonb, integer, timestamptz) is
  'Applies one DNS verification result: logs it, verifies the domain or queues a domain_verify retry; verified domains go at_risk only after two definitive failures.';

create function storeops.record_ssl_check(
  p_domain_id uuid,
  p_status text,
  p_expires_at timestamptz,
  p_issuer text,
  p_error text,
  p_now timestamptz default now()
) returns storeops.custom_domains
language plpgsql
as $$
declare
  v_domain storeops.custom_domains;
  v_status text := p_status;
begin
  if p_status is null or p_status not in ('pending', 'active', 'expiring', 'expired', 'failed') then
    raise exception 'ssl status % is not one of pending, active, expiring, expired, failed', p_status
      using errcode = '22023';
  end if;
  -- A served certificate's state follows from its expiry, whoever computed the status.
  if p_status in ('active', 'expiring', 'expired') and p_expires_at is not null then
    v_status := case when p_expires_at <= p_now then 'expired'
                     when p_expires_at <= p_now + interval '30 days' then 'expiring'
                     else 'active' end;
  end if;
  update storeops.custom_domains
  set ssl_status = v_status,
      ssl_expires_at = coalesce(p_expires_at, case when v_status = 'failed' then ssl_expires_at end),
      ssl_issuer = coalesce(p_issuer, case when v_status = 'failed' then ssl_issuer end),
      ssl_error = case when v_status in ('active', 'expiring') then null
                       else coalesce(nullif(btrim(p_error), ''), case when v_status = 'expired' then 'certificate expired' end) end,
      ssl_checked_at = p_now
  where id = p_domain_id
  returning * into v_domain;
  if not found then
    raise exception 'custom domain % does not exist', p_domain_id using errcode = 'P0002';
  end if;
  return v_domain;
end
$$;
comment on function storeops.record_ssl_check(uuid, text, timestamptz, text, text, timestamptz) is
  'Stores a TLS check of the domain: status (expiring = within 30 days, derived from the expiry), issuer, expiry and the failure reason.';

create function storeops.list_domains_due_for_recheck(
  p_every interval default interval '6 hours',
  p_limit integer default 1000,
  p_now timestamptz default now()
) returns setof storeops.custom_domains
language sql stable
as $$
  select d.*
  from storeops.custom_domains d
  where (d.auto_verify or d.status in ('verified', 'at_risk'))
    and (d.last_checked_at is null or d.last_checked_at <= p_now - p_every)
    -- A domain on the retry schedule is checked by the retry worker, not twice.
    and not exists (
      select 1 from storeops.operation_retry_queue q
      where q.tenant_id = d.tenant_id and q.operation_type = 'domain_verify' and q.operation_id = d.id
        and q.status in ('pending', 'processing'))
  order by d.last_checked_at nulls first, d.id
  limit greatest(coalesce(p_limit, 1000), 0)
$$;
comment on function storeops.list_domains_due_for_recheck(interval, integer, timestamptz) is
  'Domains the scheduler should re-verify: auto_verify ones and verified/at_risk ones not checked for p_every, unless a retry is already queued.';

revoke execute on all functions in schema storeops from public;
grant execute on all functions in schema storeops to storeops_runner;
grant execute on function storeops.current_tenant_id() to storeops_tenant;
