-- Back to 0060: a domain is unique across the platform. Fails (unique violation) while two stores
-- have a claim on one domain: remove one of the claims first.
set lock_timeout = '10s';

alter table storeops.custom_domains add constraint custom_domains_domain_unique unique (domain);

reset lock_timeout;

select 'nothing to undo: the check that the indexes are valid';

drop index concurrently if exists storeops.custom_domains_domain_idx;

drop index concurrently if exists storeops.custom_domains_live_domain_key;

drop index concurrently if exists storeops.custom_domains_tenant_domain_key;
