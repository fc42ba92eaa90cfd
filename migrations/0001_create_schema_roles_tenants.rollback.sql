-- Drops everything storeops created. The roles are cluster-wide and may serve other databases, so
-- they stay; their grants go with the schemas.
do $$
begin
  execute format('alter database %I reset search_path', current_database());
end
$$;
drop schema storeops cascade;
drop schema storeops_private cascade;
