-- Why: the daily TLS check recorded a verified domain's certificate as expiring (within 30 days) or
-- expired, and nobody was told: a store whose certificate lapses is unreachable in every browser.
-- Now a live domain (verified or at_risk) whose certificate is found with 14 days or less left
-- raises ssl_expiring, and one found expired raises ssl_expired (a log line, a metric and
-- STOREOPS_ALERT_URL, as every alert). 14 days, not the 30 at which ssl_status says expiring:
-- ACME clients renew a 90-day certificate at about 30 days left, so a daily check would page on
-- healthy stores in the days before their renewal; at 14 days left, renewal has been failing for
-- two weeks.
-- Once per certificate and state: the alert raised is kept on the row (ssl_alerted_expires_at,
-- ssl_alerted_status), and a check finding the same certificate (the same expiry) in the same state
-- raises nothing more, whatever came in between (a failed check, a network blip); a renewed
-- certificate near its end raises it again. A BEFORE trigger, so the row and its alert are written
-- together.
-- depends: 0057_shipments_act_only_on_their_tenants_orders

set local lock_timeout = '10s';

alter table storeops.custom_domains
  add column ssl_alerted_expires_at timestamptz,
  add column ssl_alerted_status text;

comment on column storeops.custom_domains.ssl_alerted_expires_at is
  'The expiry of the certificate the last ssl_expiring / ssl_expired alert was about (0058).';
comment on column storeops.custom_domains.ssl_alerted_status is
  'What that alert said: expiring or expired (0058).';

create function storeops_private.alert_on_certificate_ending()
returns trigger
language plpgsql
as $$
begin
  if new.ssl_status = 'expired'
     or new.ssl_expires_at <= coalesce(new.ssl_checked_at, now()) + interval '14 days' then
    perform storeops.raise_alert('ssl_' || new.ssl_status, new.tenant_id, jsonb_build_object(
      'domain_id', new.id, 'domain', new.domain, 'ssl_expires_at', new.ssl_expires_at,
      'ssl_issuer', new.ssl_issuer, 'ssl_error', new.ssl_error));
    new.ssl_alerted_expires_at := new.ssl_expires_at;
    new.ssl_alerted_status := new.ssl_status;
  end if;
  return new;
end
$$;

comment on function storeops_private.alert_on_certificate_ending() is
  'A live domain''s certificate found with 14 days or less left, or expired, raises ssl_expiring / ssl_expired, once per certificate and state (ssl_alerted_*).';

create trigger custom_domains_alert_certificate_ending
  before update of ssl_status, ssl_expires_at, ssl_checked_at on storeops.custom_domains
  for each row
  when (new.ssl_status in ('expiring', 'expired') and new.status in ('verified', 'at_risk')
        and new.ssl_expires_at is not null
        and (new.ssl_expires_at is distinct from new.ssl_alerted_expires_at
             or new.ssl_status is distinct from new.ssl_alerted_status))
  execute function storeops_private.alert_on_certificate_ending();
