-- Why: the runner checks its dependencies (DNS resolver, Razorpay, Shiprocket, the database) on a
-- schedule and keeps every result, so an operator sees when a gateway went slow or down.
-- depends: 0001_create_schema_roles_tenants

create table storeops.system_health_checks (
  id uuid not null default gen_random_uuid(),
  -- domain_verification (DNS resolver), payment_gateway (Razorpay), shipping_api (Shiprocket), database
  check_type text not null,
  -- healthy, degraded, down
  status text not null,
  response_time_ms integer,
  error text,
  details jsonb not null default '{}'::jsonb,
  checked_at timestamptz not null default now(),
  constraint system_health_checks_pkey primary key (id),
  constraint system_health_checks_status_known check (status in ('healthy', 'degraded', 'down')),
  constraint system_health_checks_response_time_not_negative check (response_time_ms is null or response_time_ms >= 0)
);
comment on table storeops.system_health_checks is
  'Platform-wide dependency checks (no tenant): status, response time and error of each run.';
create index system_health_checks_type_time_idx on storeops.system_health_checks (check_type, checked_at desc);
alter table storeops.system_health_checks enable row level security;
revoke all on storeops.system_health_checks from public;
grant select, insert, update, delete on storeops.system_health_checks to storeops_runner;
create policy system_health_checks_runner_select on storeops.system_health_checks for select to storeops_runner using (true);
create policy system_health_checks_runner_insert on storeops.system_health_checks for insert to storeops_runner with check (true);
create policy system_health_checks_runner_update on storeops.system_health_checks for update to storeops_runner using (true) with check (true);
create policy system_health_checks_runner_delete on storeops.system_health_checks for delete to storeops_runner using (true);
