-- Back to 0048's procedure and 0047's function (each batch from the oldest index entry, by id).
create or replace procedure storeops.cleanup_old_webhooks(p_older_than interval default interval '90 days',
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
create or replace function storeops.delete_processed_webhooks(p_table text, p_older_than interval default interval '90 days',
                                                              p_limit integer default 5000, p_now timestamptz default now())
returns integer
language plpgsql
set lock_timeout = '500ms'
set backend_flush_after = '256kB'
as $$
declare
  v_count integer;
begin
  if p_older_than is null or p_older_than < interval '0' then
    raise exception 'delete_processed_webhooks: the age must be a non-negative interval, got %',
      coalesce(p_older_than::text, 'NULL') using errcode = '22023';
  end if;
  if p_limit is null or p_limit < 1 then
    raise exception 'delete_processed_webhooks: limit must not be negative or zero, got %', coalesce(p_limit::text, 'NULL')
      using errcode = '22023';
  end if;
  if p_table = 'payment_webhooks' then
    delete from storeops.payment_webhooks
    where id = any (array(select id from storeops.payment_webhooks
                          where processed and created_at < p_now - p_older_than
                          order by created_at
                          limit p_limit))
      and processed and created_at < p_now - p_older_than;
  elsif p_table = 'shipping_webhooks' then
    delete from storeops.shipping_webhooks
    where id = any (array(select id from storeops.shipping_webhooks
                          where processed and created_at < p_now - p_older_than
                          order by created_at
                          limit p_limit))
      and processed and created_at < p_now - p_older_than;
  else
    raise exception 'delete_processed_webhooks: unknown table %', p_table using errcode = '22023',
      hint = 'use payment_webhooks or shipping_webhooks';
  end if;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function storeops.delete_processed_webhooks(text, interval, integer, timestamptz) is
  'Deletes one batch of the oldest processed webhooks older than p_older_than; never an unprocessed one (the DELETE re-checks both conditions on any row changed meanwhile).';

drop function storeops.delete_processed_webhooks_from(text, timestamptz, interval, integer, timestamptz);
