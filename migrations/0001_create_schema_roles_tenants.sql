-- Why: everything storeops owns lives in schema `storeops` (private helpers in `storeops_private`),
-- so the pack can sit beside an application's own tables. Two roles carry all access:
--   storeops_tenant  a tenant-scoped role (PostgREST/Supabase `authenticated` is granted it when it
--                    exists); row-level security limits it to the tenant in the request's JWT claims
--                    (`request.jwt.claims` -> tenant_id) or else the `storeops.tenant_id` setting.
--   storeops_runner  the runner: crosses tenants, may read and write rows, nothing else (no DDL).
-- The database's search_path is set so the seed guide's SQL runs verbatim in psql.

create schema if not exists storeops;
create schema if not exists storeops_private;
comment on schema storeops is 'storeops: custom domains, Razorpay payments, Shiprocket shipping, retry queue, health';
comment on schema storeops_private is 'storeops internals: helpers no client calls directly';

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'storeops_tenant') then
    create role storeops_tenant nologin;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'storeops_runner') then
    create role storeops_runner nologin;
  end if;
  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    grant storeops_tenant to authenticated;
  end if;
end
$$;

grant usage on schema storeops to storeops_tenant, storeops_runner;
revoke all on schema storeops_private from public;
grant usage on schema storeops_private to storeops_runner, storeops_tenant;

-- Set the database's search_path so unqualified names in the seed guide resolve. A function so
-- that a database cloned from a migrated template (CREATE DATABASE ... TEMPLATE copies no
-- per-database settings) can be configured the same way.
create function storeops_private.configure_database() returns void
language plpgsql
as $$
begin
  execute format('alter database %I set search_path = "$user", storeops, public', current_database());
  set search_path = "$user", storeops, public;
end
$$;
comment on function storeops_private.configure_database() is
  'Sets this database''s search_path to "$user", storeops, public so runbooks and the seed guide run unqualified.';

select storeops_private.configure_database();

-- The tenant of the current request: JWT claims first (Supabase/PostgREST), then the
-- storeops.tenant_id setting. NULL when neither is set, which matches no row.
create function storeops.current_tenant_id() returns uuid
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_claims jsonb;
  v_tenant text;
begin
  begin
    v_claims := nullif(nullif(current_setting('request.jwt.claims', true), ''), 'null')::jsonb;
  exception
    when invalid_text_representation then
      raise exception 'request.jwt.claims is not valid JSON' using errcode = '22P02',
        hint = 'set request.jwt.claims to a JSON object such as {"tenant_id": "<uuid>"}';
  end;
  v_tenant := coalesce(
    v_claims ->> 'tenant_id',
    v_claims -> 'app_metadata' ->> 'tenant_id',
    nullif(current_setting('storeops.tenant_id', true), '')
  );
  begin
    return v_tenant::uuid;
  exception
    when invalid_text_representation then
      raise exception 'tenant_id % in the request claims is not a uuid', v_tenant
        using errcode = '22P02', hint = 'set request.jwt.claims or storeops.tenant_id to a tenant uuid';
  end;
end
$$;
comment on function storeops.current_tenant_id() is
  'The tenant RLS scopes to: request.jwt.claims->tenant_id (or app_metadata.tenant_id), else the storeops.tenant_id setting.';
grant execute on function storeops.current_tenant_id() to storeops_tenant, storeops_runner;

create function storeops_private.set_updated_at() returns trigger
language plpgsql
as $$
begin
  new.updated_at := now();
  return new;
end
$$;
comment on function storeops_private.set_updated_at() is 'Keeps updated_at true whoever writes the row: runner, pg_cron or psql.';

-- Row-level security for one table: one policy per command for each role. Tenants see and change
-- only their own rows; the runner crosses tenants. `p_tenant_commands` limits what a tenant may do
-- at all (grants), e.g. tenants may read but not delete their own tenant row.
create function storeops_private.enable_tenant_rls(
  p_table regclass,
  p_tenant_column name default 'tenant_id',
  p_tenant_commands text[] default array['select', 'insert', 'update', 'delete']
) returns void
language plpgsql
as $$
declare
  v_name text := (select relname from pg_class where oid = p_table);
  v_cmd text;
  v_match text;
begin
  execute format('alter table %s enable row level security', p_table);
  execute format('revoke all on %s from public', p_table);
  execute format('grant select, insert, update, delete on %s to storeops_runner', p_table);
  v_match := format('%I = (select storeops.current_tenant_id())', p_tenant_column);
  foreach v_cmd in array array['select', 'insert', 'update', 'delete'] loop
    execute format('create policy %I on %s for %s to storeops_runner %s',
      v_name || '_runner_' || v_cmd, p_table, v_cmd,
      case v_cmd when 'insert' then 'with check (true)'
                 when 'update' then 'using (true) with check (true)'
                 else 'using (true)' end);
    if v_cmd = any (p_tenant_commands) then
      execute format('grant %s on %s to storeops_tenant', v_cmd, p_table);
      execute format('create policy %I on %s for %s to storeops_tenant %s',
        v_name || '_tenant_' || v_cmd, p_table, v_cmd,
        case v_cmd when 'insert' then format('with check (%s)', v_match)
                   when 'update' then format('using (%s) with check (%s)', v_match, v_match)
                   else format('using (%s)', v_match) end);
    end if;
  end loop;
end
$$;
comment on function storeops_private.enable_tenant_rls(regclass, name, text[]) is
  'Turns on RLS with one policy per command and role: tenant rows for storeops_tenant, all rows for storeops_runner.';

create table storeops.tenants (
  id uuid not null default gen_random_uuid(),
  name text not null,
  slug text,
  razorpay_account_id text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint tenants_pkey primary key (id),
  constraint tenants_name_not_blank check (btrim(name) <> ''),
  constraint tenants_slug_unique unique (slug),
  constraint tenants_razorpay_account_id_format check (razorpay_account_id is null or razorpay_account_id ~ '^acc_[A-Za-z0-9]+$')
);
comment on table storeops.tenants is
  'One merchant store. razorpay_account_id, when set, is cross-checked against the account_id of each Razorpay webhook.';
create trigger tenants_set_updated_at before update on storeops.tenants
  for each row execute function storeops_private.set_updated_at();
select storeops_private.enable_tenant_rls('storeops.tenants', 'id', array['select', 'update']);

-- Per-tenant provider secrets. Several rows per (tenant, kind) may be active at once so a secret
-- can be rotated without dropping webhooks signed with the old one. Only the runner reads this.
create table storeops.tenant_secrets (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null,
  kind text not null,
  key_id text,
  secret text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz,
  constraint tenant_secrets_pkey primary key (id),
  constraint tenant_secrets_tenant_fkey foreign key (tenant_id) references storeops.tenants (id) on delete cascade,
  -- razorpay_webhook: webhook signing secret; razorpay_api: key_id + key secret;
  -- shiprocket_webhook: the x-api-key token; shiprocket_api: API user email (key_id) + password.
  constraint tenant_secrets_kind_known check (kind in ('razorpay_webhook', 'razorpay_api', 'shiprocket_webhook', 'shiprocket_api')),
  constraint tenant_secrets_secret_not_blank check (secret <> '')
);
comment on table storeops.tenant_secrets is
  'Per-tenant provider secrets; override the platform-wide env vars. Readable only by storeops_runner; expires_at ends a rotated secret.';
create index tenant_secrets_tenant_kind_idx on storeops.tenant_secrets (tenant_id, kind);
alter table storeops.tenant_secrets enable row level security;
revoke all on storeops.tenant_secrets from public;
grant select, insert, update, delete on storeops.tenant_secrets to storeops_runner;
create policy tenant_secrets_runner_select on storeops.tenant_secrets for select to storeops_runner using (true);
create policy tenant_secrets_runner_insert on storeops.tenant_secrets for insert to storeops_runner with check (true);
create policy tenant_secrets_runner_update on storeops.tenant_secrets for update to storeops_runner using (true) with check (true);
create policy tenant_secrets_runner_delete on storeops.tenant_secrets for delete to storeops_runner using (true);

create function storeops.get_tenant_secrets(p_tenant_id uuid, p_kind text, p_now timestamptz default now())
returns table (key_id text, secret text)
language sql stable
as $$
  select s.key_id, s.secret
  from storeops.tenant_secrets s
  where s.tenant_id = p_tenant_id and s.kind = p_kind
    and (s.expires_at is null or s.expires_at > p_now)
  order by s.created_at desc
$$;
comment on function storeops.get_tenant_secrets(uuid, text, timestamptz) is
  'The secrets a tenant has active now, newest first; during a rotation both old and new are returned.';
revoke execute on function storeops.get_tenant_secrets(uuid, text, timestamptz) from public;
grant execute on function storeops.get_tenant_secrets(uuid, text, timestamptz) to storeops_runner;
