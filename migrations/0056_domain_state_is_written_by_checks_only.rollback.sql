-- Back to 0055: tenants may insert and update every column of their own domains, any domain text
-- passes, and a domain going at_risk or failed raises no alert.
drop trigger if exists custom_domains_alert_lost on storeops.custom_domains;
drop function if exists storeops_private.alert_on_domain_lost();
drop trigger if exists custom_domains_domain_is_a_host_name on storeops.custom_domains;
drop function if exists storeops_private.check_domain_is_a_host_name();
drop function if exists storeops_private.is_host_name(text);
revoke insert (id, tenant_id, domain, auto_verify), update (auto_verify) on storeops.custom_domains from storeops_tenant;
grant insert, update on storeops.custom_domains to storeops_tenant;
