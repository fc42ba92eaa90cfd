-- Why: three ways the domain checks kept the retry queue, and the alerts, busier than the domains
-- deserved (found by a review):
--   * Pressing Verify (the admin endpoint, `storeops verify-domain`) counted as a retry: a store
--     waiting for DNS to propagate that clicked six times in a minute had its domain failed, with no
--     automatic tries left (and an operation_failed alert), and a click at the fourth try moved the
--     next automatic check 40 minutes out. A check someone asks for (p_manual) is now logged and
--     counted as evidence as before, but never counts on a live retry: its attempts and time stay.
--     With no live retry it starts one, as before (asking again about a failed domain restarts the
--     schedule).
--   * A failed domain with auto_verify on went back to pending at every 6-hourly re-check, ran the
--     whole retry schedule again and raised operation_failed again, every 8.5 hours for as long as
--     it stayed broken. An automatic check of a failed domain now only logs: it stays failed until
--     a check succeeds (then it is verified) or its owner asks again.
--   * A domain at risk ran a retry schedule after every 6-hourly re-check, each ending in an
--     operation_failed alert: about twenty over its 7-day grace, beside the one domain_at_risk
--     alert (0056). Automatic checks of an at_risk domain now start no retry; the 6-hourly re-check
--     follows it, and fails it at the end of the grace as before.
-- And, with 0061's claims per store: a check that finds a claim's records while another store holds
-- the domain live (verified or at_risk) is recorded as a definitive failure saying so, not as a
-- success: one live claim per domain (0061's unique index would refuse the second anyway).
-- record_domain_verification gains p_manual (default false: the scheduler and the retry worker),
-- so its signature changes: the old one is dropped (if there), the new one created or replaced, and
-- the grants given again.
-- depends: 0061_domains_are_claimed_per_store

drop function if exists storeops.record_domain_verification(uuid, boolean, boolean, text, jsonb, integer, timestamptz);

create or replace function storeops.record_domain_verification(
  p_domain_id uuid,
  p_success boolean,
  p_definitive boolean,
  p_error text,
  p_dns_records jsonb,
  p_duration_ms integer default null,
  p_now timestamptz default now(),
  p_manual boolean default false
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

  -- One live claim per domain: records found while another store holds it are not a verification.
  -- Two stores' checks of one domain at once take turns here (the second sees the first's result),
  -- rather than the second failing on custom_domains_live_domain_key.
  if p_success then
    perform pg_advisory_xact_lock(hashtextextended('storeops.custom_domains:' || v_domain.domain, 0));
    if exists (select 1 from storeops.custom_domains o
               where o.domain = v_domain.domain and o.id <> v_domain.id and o.status in ('verified', 'at_risk')) then
      p_success := false;
      p_definitive := true;
      v_error := v_domain.domain || ' is verified by another store; it can be claimed here once that claim is '
                 || 'released (when its records are gone it goes at risk, and is released 7 days later)';
    end if;
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
  -- A check someone asked for never counts on a live retry: its attempts and time stay as they were.
  if coalesce(p_manual, false) then
    select * into v_retry from storeops.operation_retry_queue
    where tenant_id = v_domain.tenant_id and operation_type = 'domain_verify'
      and operation_id = v_domain.id and status in ('pending', 'processing');
  end if;

  if v_domain.status in ('verified', 'at_risk') then
    -- Once verified, only definitive evidence demotes: two definitive failures in a row put it at
    -- risk, and a definitive failure once it has been at risk for the grace period fails it.
    v_status := case when v_failures >= 2 then 'at_risk' else v_domain.status end;
    if v_domain.status = 'at_risk' and coalesce(p_definitive, false)
       and p_now - coalesce(v_domain.at_risk_since, v_domain.last_checked_at, p_now) >= interval '7 days' then
      v_status := 'failed';
      v_error := v_error || ' (at risk since ' || to_char(coalesce(v_domain.at_risk_since, v_domain.last_checked_at) at time zone 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC; 7-day grace over)';
      -- Given up, as when the queue gives up on a new domain: a live retry ends here, or it would
      -- check again and, failing, count as a domain never verified (pending).
      update storeops.operation_retry_queue
      set status = 'failed', last_error = v_error, completed_at = p_now, locked_by = null, locked_until = null
      where tenant_id = v_domain.tenant_id and operation_type = 'domain_verify'
        and operation_id = v_domain.id and status in ('pending', 'processing');
    elsif v_status = 'verified' and v_retry.id is null then
      -- A verified domain failing a check is checked again soon, on the retry schedule; once at
      -- risk, the 6-hourly re-check follows it (a schedule after each re-check ended in an
      -- operation_failed alert each, twenty over the grace, beside the one domain_at_risk).
      v_retry := storeops.schedule_operation_retry(
        v_domain.tenant_id, 'domain_verify', v_domain.id,
        jsonb_build_object('domain_id', v_domain.id, 'domain', v_domain.domain), v_error, p_now);
    end if;
  else
    -- Never verified: keep trying on the retry schedule; give up when the queue does. A failed
    -- domain checked again automatically (auto_verify) stays failed and starts no schedule (it went
    -- back to pending and ran the whole schedule again, alert included, every 8.5 hours); asking
    -- again starts one.
    if v_retry.id is null and (coalesce(p_manual, false) or v_domain.status = 'pending') then
      v_retry := storeops.schedule_operation_retry(
        v_domain.tenant_id, 'domain_verify', v_domain.id,
        jsonb_build_object('domain_id', v_domain.id, 'domain', v_domain.domain), v_error, p_now);
    end if;
    v_status := case when v_retry.id is null or v_retry.status = 'failed' then 'failed' else 'pending' end;
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
comment on function storeops.record_domain_verification(uuid, boolean, boolean, text, jsonb, integer, timestamptz, boolean) is
  'Applies one DNS verification result: logs it, verifies the domain (unless another store holds it verified or at risk) or queues a domain_verify retry; verified domains go at_risk only after two definitive failures, and fail at a definitive failure once at risk for 7 days (at_risk_since). p_manual: a check someone asked for, which leaves a live retry as it is. Failed and at_risk domains checked automatically start no retry.';

revoke execute on function storeops.record_domain_verification(uuid, boolean, boolean, text, jsonb, integer, timestamptz, boolean) from public;
grant execute on function storeops.record_domain_verification(uuid, boolean, boolean, text, jsonb, integer, timestamptz, boolean) to storeops_runner;
