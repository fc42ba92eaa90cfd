-- Back to 0040's procedure: stops with the lock timeout's error.
drop procedure storeops.cleanup_old_webhooks(interval, integer, integer, interval);

create procedure storeops.cleanup_old_webhooks(p_older_than interval default interval '90 days',
                                               p_batch integer default 5000)
language plpgsql
as $$
declare
  v_table text;
  v_deleted integer;
begin
  foreach v_table in array array['payment_webhooks', 'shipping_webhooks'] loop
    loop
      v_deleted := storeops.delete_processed_webhooks(v_table, p_older_than, p_batch);
      commit;
      exit when v_deleted < p_batch;
    end loop;
  end loop;
  delete from storeops.scheduler_ticks where started_at < now() - interval '30 days';
  commit;
end
$$;
comment on procedure storeops.cleanup_old_webhooks(interval, integer) is
  'Weekly cleanup in committed batches (no long locks); keeps unprocessed webhooks however old.';
revoke execute on procedure storeops.cleanup_old_webhooks(interval, integer) from public;
grant execute on procedure storeops.cleanup_old_webhooks(interval, integer) to storeops_runner;
