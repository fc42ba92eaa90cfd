drop function storeops.list_domains_due_for_recheck(interval, integer, timestamptz);
drop function storeops.record_ssl_check(uuid, text, timestamptz, text, text, timestamptz);
drop function storeops.record_domain_verification(uuid, boolean, boolean, text, jsonb, integer, timestamptz);
drop index storeops.custom_domains_recheck_idx;
comment on column storeops.custom_domains.consecutive_failures is null;
alter table storeops.domain_verification_logs
  drop constraint domain_verification_logs_error_when_failed,
  drop constraint domain_verification_logs_duration_not_negative;
alter table storeops.domain_verification_logs drop column definitive;
