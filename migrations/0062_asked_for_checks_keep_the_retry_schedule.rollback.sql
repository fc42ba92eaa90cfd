-- Back to 0061: record_domain_verification without p_manual (0052's), every failure counting on the
-- retry schedule.
drop function if exists storeops.record_domain_verification(uuid, boolean, boolean, text, jsonb, integer, timestamptz, boolean);

create or replace function storeops.record_domain_verification(
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
        consecutive_failures = 0, at_risk_since = null
    where id = v_domain.id
    returning * into v_domain;
    return v_domain;
  end if;

  v_failures := v_domain.consecutive_failures + case when coalesce(p_definitive, false) then 1 else 0 end;
  v_retry := storeops.schedule_operation_retry(
    v_domain.tenant_id, 'domain_verify', v_domain.id,
    jsonb_build_object('domain_id', v_domain.id, 'domain', v_domain.domain), v_error, p_now);

  if v_domain.status in ('verified', 'at_risk') then
    -- Once verified, only definitive evidence demotes: two definitive failures in a row put it at
    -- risk, and a definitive failure once it has been at risk for the grace period fails it.
    v_status := case when v_failures >= 2 then 'at_risk' else v_domain.status end;
    if v_domain.status = 'at_risk' and coalesce(p_definitive, false)
       and p_now - coalesce(v_domain.at_risk_since, v_domain.last_checked_at, p_now) >= interval '7 days' then
      v_status := 'failed';
      v_error := v_error || ' (at risk since ' || to_char(coalesce(v_domain.at_risk_since, v_domain.last_checked_at) at time zone 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC; 7-day grace over)';
      -- Given up, as when the queue gives up on a new domain: its live retry ends here, or it would
      -- check again and, failing, count as a domain never verified (pending).
      update storeops.operation_retry_queue
      set status = 'failed', last_error = v_error, completed_at = p_now, locked_by = null, locked_until = null
      where tenant_id = v_domain.tenant_id and operation_type = 'domain_verify'
        and operation_id = v_domain.id and status in ('pending', 'processing');
    end if;
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
      last_verification_error = v_error, last_checked_at = p_now, consecutive_failures = v_failures,
      at_risk_since = case when v_status = 'at_risk' then coalesce(at_risk_since, p_now) end
  where id = v_domain.id
  returning * into v_domain;
  return v_domain;
end
$$;
comment on function storeops.record_domain_verification(uuid, boolean, boolean, text, jsonb, integer, timestamptz) is
  'Applies one DNS verification result: logs it, verifies the domain or queues a domain_verify retry; verified domains go at_risk only after two definitive failures, and fail at a definitive failure once at risk for 7 days (at_risk_since).';

revoke execute on function storeops.record_domain_verification(uuid, boolean, boolean, text, jsonb, integer, timestamptz) from public;
grant execute on function storeops.record_domain_verification(uuid, boolean, boolean, text, jsonb, integer, timestamptz) to storeops_runner;
