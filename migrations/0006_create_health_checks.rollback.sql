drop table storeops.system_health_checks;
