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
-- Also: a domain added or renamed must be a host name in A-label form (letters, digits and hyphens,
-- labels of 1 to 63 characters not starting or ending with a hyphen, at least two labels), as the
-- runner's normalize_domain makes it. A U-label such as 'bücher.de', a leading space or an
-- underscore could be inserted directly and then stood beside its A-label as a second claim on the
-- same host. A trigger checks it (23514) when a domain is inserted or its name changes, not a CHECK
-- constraint: Postgres checks a constraint on every update of a row, even a NOT VALID one, so a row
-- stored before this migration with such a name could no longer have its checks recorded. Those
-- rows stay as they are; one summary alert (domain_names_to_fix, no tenant) counts them and names up
-- to 20.
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

create function storeops_private.is_host_name(p_domain text)
returns boolean
language sql
immutable
as $$
  select p_domain ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'
$$;

comment on function storeops_private.is_host_name(text) is
  'Whether a domain is a host name in A-label form: lowercase letters, digits and hyphens, labels of 1-63 characters not starting or ending with a hyphen, at least two labels.';

do $$
declare
  v_count bigint;
begin
  select count(*) into v_count from storeops.custom_domains
  where not storeops_private.is_host_name(domain);
  if v_count > 0 then
    perform storeops.raise_alert('domain_names_to_fix', null, jsonb_build_object(
      'domains', v_count,
      'sample', (select jsonb_agg(jsonb_build_object('domain_id', d.id, 'tenant_id', d.tenant_id, 'domain', d.domain))
                 from (select id, tenant_id, domain from storeops.custom_domains
                       where not storeops_private.is_host_name(domain)
                       limit 20) d),
      'note', 'stored before migration 0056, not host names in A-label form: one may be a second claim on a host another tenant holds under its A-label'));
  end if;
end
$$;

create function storeops_private.check_domain_is_a_host_name()
returns trigger
language plpgsql
as $$
begin
  if tg_op = 'UPDATE' and new.domain is not distinct from old.domain then
    return new;  -- unchanged: a name stored before 0056 keeps working
  end if;
  if not coalesce(storeops_private.is_host_name(new.domain), false) then
    raise exception 'domain % is not a host name in A-label form', new.domain
      using errcode = '23514', hint = 'lowercase letters, digits and hyphens, e.g. shop.example.in or xn--bcher-kva.de for bücher.de';
  end if;
  return new;
end
$$;

comment on function storeops_private.check_domain_is_a_host_name() is
  'A domain inserted or renamed must be a host name in A-label form (23514).';

create trigger custom_domains_domain_is_a_host_name
  before insert or update of domain on storeops.custom_domains
  for each row
  when (new.domain is not null)
  execute function storeops_private.check_domain_is_a_host_name();

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
