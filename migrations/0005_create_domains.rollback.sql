drop table storeops.domain_verification_logs;
drop table storeops.custom_domains;
