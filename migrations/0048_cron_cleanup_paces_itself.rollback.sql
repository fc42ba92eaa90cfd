-- Back to 0044's procedure: batches of 5,000 back to back.
drop procedure storeops.cleanup_old_webhooks(interval, integer, integer, interval, double precision);

create procedure storeops.cleanup_old_webhooks(p_older_than interval default interval '90 days',
                                               p_batch integer default 5000,
                                               p_attempts integer default 5,
                                               p_pause interval default interval '1 second')
language plpgsql
as $$
declare
  v_table text;
  v_deleted integer;
  v_failed integer;
begin
  if p_attempts is null or p_attempts < 1 then
    raise exception 'cleanup_old_webhooks: attempts must be at least 1, got %', coalesce(p_attempts::text, 'NULL')
      using errcode = '22023';
  end if;
  foreach v_table in array array['payment_webhooks', 'shipping_webhooks'] loop
    v_failed := 0;
    loop
      v_deleted := null;
      begin  -- a subtransaction: a batch that times out on a lock undoes only itself
        v_deleted := storeops.delete_processed_webhooks(v_table, p_older_than, p_batch);
      exception when lock_not_available then
        v_failed := v_failed + 1;
      end;
      commit;  -- outside the block above: a procedure cannot commit inside a block with handlers
      if v_deleted is null then
        if v_failed >= p_attempts then
          raise warning 'cleanup_old_webhooks: % has rows locked by other transactions; left for the next run after % attempts',
            v_table, v_failed;
          exit;
        end if;
        perform pg_sleep(extract(epoch from p_pause));
        continue;
      end if;
      v_failed := 0;
      exit when v_deleted < p_batch;
    end loop;
  end loop;
  delete from storeops.scheduler_ticks where started_at < now() - interval '30 days';
  commit;
end
$$;
comment on procedure storeops.cleanup_old_webhooks(interval, integer, integer, interval) is
  'Weekly cleanup in committed batches (no long locks); keeps unprocessed webhooks however old. A batch that meets rows another transaction holds is tried again after p_pause, up to p_attempts times, then that table waits for the next run (a WARNING says so).';
revoke execute on procedure storeops.cleanup_old_webhooks(interval, integer, integer, interval) from public;
grant execute on procedure storeops.cleanup_old_webhooks(interval, integer, integer, interval) to storeops_runner;
