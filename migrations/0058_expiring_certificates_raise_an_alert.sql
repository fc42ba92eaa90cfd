-- Why: the daily TLS check recorded a verified domain's certificate as expiring (within 30 days) or
-- expired, and nobody was told: a store whose certificate lapses is unreachable in every browser.
-- Now the first check that finds a certificate expiring raises ssl_expiring, and the first that finds
-- it expired raises ssl_expired (a log line, a metric and STOREOPS_ALERT_URL, as every alert), for
-- domains that are live (verified or at_risk). Once per certificate and state: a later check that
-- finds the same certificate (the same expiry) already in that state at the previous check raises
-- nothing more, even with a failed check (a network blip) in between; a renewed certificate that
-- is again near its end raises it again.
-- depends: 0057_shipments_act_only_on_their_tenants_orders

create function storeops_private.alert_on_certificate_ending()
returns trigger
language plpgsql
as $$
declare
  v_known boolean;  -- the previous check saw this certificate, already in this state
begin
  v_known := old.ssl_expires_at is not distinct from new.ssl_expires_at
             and old.ssl_checked_at is not null
             and old.ssl_checked_at >= new.ssl_expires_at
                                       - case new.ssl_status when 'expiring' then interval '30 days' else interval '0' end;
  if not v_known then
    perform storeops.raise_alert('ssl_' || new.ssl_status, new.tenant_id, jsonb_build_object(
      'domain_id', new.id, 'domain', new.domain, 'ssl_expires_at', new.ssl_expires_at,
      'ssl_issuer', new.ssl_issuer, 'ssl_error', new.ssl_error));
  end if;
  return new;
end
$$;

comment on function storeops_private.alert_on_certificate_ending() is
  'A live domain''s certificate found expiring (30 days) or expired raises ssl_expiring / ssl_expired, once per certificate and state.';

create trigger custom_domains_alert_certificate_ending
  after update of ssl_status, ssl_expires_at, ssl_checked_at on storeops.custom_domains
  for each row
  when (new.ssl_status in ('expiring', 'expired') and new.status in ('verified', 'at_risk')
        and new.ssl_expires_at is not null)
  execute function storeops_private.alert_on_certificate_ending();
