-- Back to 0057: a certificate found expiring or expired raises no alert.
set local lock_timeout = '10s';
drop trigger if exists custom_domains_alert_certificate_ending on storeops.custom_domains;
drop function if exists storeops_private.alert_on_certificate_ending();
alter table storeops.custom_domains drop column if exists ssl_alerted_status, drop column if exists ssl_alerted_expires_at;
