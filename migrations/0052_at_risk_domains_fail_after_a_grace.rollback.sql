-- Back to 0030's record_domain_verification: an at_risk domain stays at risk.
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

alter table storeops.custom_domains drop column if exists at_risk_since;
