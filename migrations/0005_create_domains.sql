-- Why: a tenant points its own domain at the platform. Ownership is a TXT token, routing is a
-- CNAME (subdomain) or A/AAAA inside our address set (apex). Every attempt is logged with what each
-- DNS query saw, so "why is my domain not verified" is answered from one table.
-- depends: 0002_create_retry_queue

create table storeops.custom_domains (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null,
  domain text not null,
  -- pending: never verified; verified; at_risk: was verified, lost its records twice; failed: gave up.
  status text not null default 'pending',
  verification_token text not null default replace(gen_random_uuid()::text, '-', ''),
  verification_attempts integer not null default 0,
  last_verification_error text,
  last_verified_at timestamptz,
  last_checked_at timestamptz,
  consecutive_failures integer not null default 0,
  auto_verify boolean not null default false,
  -- pending, active, expiring (within 30 days), expired, failed
  ssl_status text not null default 'pending',
  ssl_expires_at timestamptz,
  ssl_issuer text,
  ssl_error text,
  ssl_checked_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint custom_domains_pkey primary key (id),
  constraint custom_domains_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade,
  constraint custom_domains_domain_unique unique (domain),
  constraint custom_domains_domain_lowercase check (domain = lower(domain) and domain !~ '\.$' and length(domain) <= 253),
  constraint custom_domains_status_known check (status in ('pending', 'verified', 'at_risk', 'failed')),
  constraint custom_domains_ssl_status_known check (ssl_status in ('pending', 'active', 'expiring', 'expired', 'failed')),
  constraint custom_domains_attempts_not_negative check (verification_attempts >= 0 and consecutive_failures >= 0)
);
comment on table storeops.custom_domains is
  'A tenant''s custom domain (IDNA A-label, lowercase, no trailing dot) with verification and SSL state.';
create index custom_domains_tenant_idx on storeops.custom_domains (tenant_id);
create index custom_domains_auto_verify_idx on storeops.custom_domains (last_checked_at nulls first) where auto_verify;
create trigger custom_domains_set_updated_at before update on storeops.custom_domains
  for each row execute function storeops_private.set_updated_at();
select storeops_private.enable_tenant_rls('storeops.custom_domains');

create table storeops.domain_verification_logs (
  id uuid not null default gen_random_uuid(),
  domain_id uuid not null,
  tenant_id uuid not null,
  success boolean not null,
  error text,
  dns_records jsonb not null default '[]'::jsonb,
  duration_ms integer,
  verified_at timestamptz not null default now(),
  constraint domain_verification_logs_pkey primary key (id),
  constraint domain_verification_logs_domain_fkey foreign key (domain_id)
    references storeops.custom_domains (id) on delete cascade,
  constraint domain_verification_logs_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade
);
comment on table storeops.domain_verification_logs is
  'One row per verification attempt: success, a human error message, and per query the name, type, answers, rcode, TTL and resolver.';
create index domain_verification_logs_domain_time_idx on storeops.domain_verification_logs (domain_id, verified_at desc);
create index domain_verification_logs_tenant_idx on storeops.domain_verification_logs (tenant_id);
select storeops_private.enable_tenant_rls('storeops.domain_verification_logs', 'tenant_id', array['select']);

revoke execute on all functions in schema storeops from public;
grant execute on all functions in schema storeops to storeops_runner;
grant execute on function storeops.current_tenant_id() to storeops_tenant;
