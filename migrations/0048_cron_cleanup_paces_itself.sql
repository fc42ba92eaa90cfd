-- Why: the weekly pg_cron job's procedure deleted batches of 5,000 rows back to back, while the
-- runner's cleanup (runner/scheduler.py) deletes 500 at a time and pauses so that deleting takes at
-- most a third of the time: the pause is what lets ingest's commits through (each batch holds one of
-- a small server's cores and adds its WAL to the flush every commit waits for). The procedure now
-- paces itself the same way, so pg_cron, psql and the runner clean up alike: p_batch defaults to
-- 500, and after each full batch it sleeps long enough that deleting takes at most p_duty of the time
-- (at least 10 ms). The signature gains p_duty, with a default, so
-- `call storeops.cleanup_old_webhooks()` is unchanged.
-- depends: 0047_cleanup_deletes_the_oldest_first

drop procedure storeops.cleanup_old_webhooks(interval, integer, integer, interval);

create procedure storeops.cleanup_old_webhooks(p_older_than interval default interval '90 days',
                                               p_batch integer default 500,
                                               p_attempts integer default 5,
                                               p_pause interval default interval '1 second',
                                               p_duty double precision default 1.0 / 3)
language plpgsql
as $$
declare
  v_table text;
  v_deleted integer;
  v_failed integer;
  v_started timestamptz;
begin
  if p_attempts is null or p_attempts < 1 then
    raise exception 'cleanup_old_webhooks: attempts must be at least 1, got %', coalesce(p_attempts::text, 'NULL')
      using errcode = '22023';
  end if;
  if p_batch is null or p_batch < 1 then
    raise exception 'cleanup_old_webhooks: batch must be at least 1, got %', coalesce(p_batch::text, 'NULL')
      using errcode = '22023';
  end if;
  if p_duty is null or not (p_duty > 0 and p_duty <= 1) then
    raise exception 'cleanup_old_webhooks: duty must be more than 0 and at most 1, got %', coalesce(p_duty::text, 'NULL')
      using errcode = '22023';
  end if;
  foreach v_table in array array['payment_webhooks', 'shipping_webhooks'] loop
    v_failed := 0;
    loop
      v_deleted := null;
      v_started := clock_timestamp();
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
      -- let ingest interleave: deleting takes at most p_duty of the time
      perform pg_sleep(greatest(0.01, extract(epoch from clock_timestamp() - v_started) * (1 - p_duty) / p_duty));
    end loop;
  end loop;
  delete from storeops.scheduler_ticks where started_at < now() - interval '30 days';
  commit;
end
$$;
comment on procedure storeops.cleanup_old_webhooks(interval, integer, integer, interval, double precision) is
  'Weekly cleanup in committed batches of p_batch rows (no long locks), pausing after each so that deleting takes at most p_duty of the time; keeps unprocessed webhooks however old. A batch that meets rows another transaction holds is tried again after p_pause, up to p_attempts times, then that table waits for the next run (a WARNING says so).';
revoke execute on procedure storeops.cleanup_old_webhooks(interval, integer, integer, interval, double precision) from public;
grant execute on procedure storeops.cleanup_old_webhooks(interval, integer, integer, interval, double precision) to storeops_runner;
