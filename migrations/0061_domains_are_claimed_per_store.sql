-- Why: a domain was unique across the platform from the moment anyone added it, whatever became of
-- the claim. A store that typed someone else's domain (by mistake or on purpose) blocked its real
-- owner for good: the owner's insert failed on custom_domains_domain_unique, while the squatter's
-- claim sat pending or failed, never to be verified (it cannot publish the TXT record). The
-- platforms this follows (Vercel, Netlify; ../shared/reference/domains.md) let the one who proves
-- ownership in DNS have the domain.
-- Now:
--   * a store may claim a domain once (unique per tenant and domain);
--   * any number of stores may have a claim on the same domain pending or failed, each with its own
--     token: the one whose token is in DNS verifies;
--   * only one claim on a domain can be live (verified or at_risk): a check that finds a claim's
--     records while another store holds the domain live is recorded as a failure saying so
--     (migration 0062), and the domain can be claimed once that store's records are gone and its
--     claim is released (failed, 7 days after it went at risk).
-- The indexes are built CONCURRENTLY, outside a transaction (yoyo's transactional: false), so that
-- domain writes go on meanwhile; then the old constraint is dropped (a moment's ACCESS EXCLUSIVE
-- lock, waited for at most 10 s).
-- transactional: false
-- depends: 0060_recorded_shipments_take_their_waiting_webhooks

create unique index concurrently if not exists custom_domains_tenant_domain_key
  on storeops.custom_domains (tenant_id, domain);

create unique index concurrently if not exists custom_domains_live_domain_key
  on storeops.custom_domains (domain) where status in ('verified', 'at_risk');

create index concurrently if not exists custom_domains_domain_idx on storeops.custom_domains (domain);

-- A build interrupted on an earlier try leaves an invalid index that "if not exists" would accept.
do $$
begin
  if exists (select 1 from pg_index i
             join pg_class c on c.oid = i.indexrelid
             join pg_namespace n on n.oid = c.relnamespace
             where n.nspname = 'storeops' and c.relname in ('custom_domains_tenant_domain_key', 'custom_domains_live_domain_key', 'custom_domains_domain_idx') and not i.indisvalid) then
    raise exception 'an index this migration builds is invalid (a concurrent build was interrupted)'
      using hint = 'drop the invalid index (drop index concurrently storeops.<name>), then migrate again';
  end if;
end
$$;

set lock_timeout = '10s';

alter table storeops.custom_domains drop constraint if exists custom_domains_domain_unique;

reset lock_timeout;
