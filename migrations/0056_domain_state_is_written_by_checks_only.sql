-- Why: a tenant (storeops_tenant, which PostgREST's `authenticated` is granted) could INSERT and
-- UPDATE every column of its own custom_domains rows. So a store could mark a domain verified, or
-- clear at_risk, without any DNS check; choose its own verification_token (for instance one an
-- earlier owner of the domain left published in DNS); or rename a verified domain to a host that was
-- never checked. A domain's verification and SSL state is now written only by storeops's checks
-- (record_domain_verification, record_ssl_check, the runner): a tenant may insert id, tenant_id,
-- domain and auto_verify (the rest takes its defaults: pending, a fresh token) and may update
-- auto_verify only (the seed guide's "Enable Auto-Verification"). To change a domain, delete it and
-- add the new one.
--
-- Also: the domain must be a host name in A-label form (letters, digits and hyphens, labels of 1 to
-- 63 characters not starting or ending with a hyphen, at least two labels), as the runner's
-- normalize_domain makes it. A U-label such as 'bücher.de', a leading space or an underscore could be
-- inserted directly and then stood beside its A-label as a second claim on the same host. Checked for
-- new and changed rows; rows already stored are not re-checked (NOT VALID).
--
-- And: a verified domain that went at_risk, or failed at the end of its grace, only sent a
-- pg_notify that nothing delivers (alerts are rows in storeops.alerts). It now raises a
-- domain_at_risk or domain_failed alert (a log line, a metric and STOREOPS_ALERT_URL, as every
-- alert), once per change of status, whoever made it.
-- depends: 0055_note_cancelled_orders_holding_money

set local lock_timeout = '10s';

revoke insert, update on storeops.custom_domains from storeops_tenant;
grant insert (id, tenant_id, domain, auto_verify) on storeops.custom_domains to storeops_tenant;
grant update (auto_verify) on storeops.custom_domains to storeops_tenant;

alter table storeops.custom_domains
  add constraint custom_domains_domain_is_a_host_name
  check (domain ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$') not valid;

create function storeops_private.alert_on_domain_lost()
returns trigger
language plpgsql
as $$
begin
  if new.status in ('at_risk', 'failed') and old.status in ('verified', 'at_risk')
     and new.status is distinct from old.status then
    perform storeops.raise_alert('domain_' || new.status, new.tenant_id, jsonb_build_object(
      'domain_id', new.id, 'domain', new.domain, 'error', new.last_verification_error,
      'last_verified_at', new.last_verified_at, 'at_risk_since', coalesce(new.at_risk_since, old.at_risk_since)));
  end if;
  return new;
end
$$;

comment on function storeops_private.alert_on_domain_lost() is
  'A verified domain going at_risk, or an at_risk one failing, raises domain_at_risk or domain_failed, whoever changed it.';

create trigger custom_domains_alert_lost
  after update of status on storeops.custom_domains
  for each row
  when (new.status in ('at_risk', 'failed') and old.status in ('verified', 'at_risk')
        and new.status is distinct from old.status)
  execute function storeops_private.alert_on_domain_lost();
