-- Why: each cleanup batch found its rows through created_idx from the oldest entry, past the index
-- entries of every row the batches before it had deleted (dead until vacuum), then looked each row
-- up again by id in the primary key. Over a million rows a batch of 500 took 3 ms at the start and
-- 6-7 ms near the end (one of a small server's cores, while ingest waits for it). Now:
--   * storeops.delete_processed_webhooks_from(table, from, ...) deletes the oldest processed rows
--     at or after `from` and returns how many and the newest created_at among them; the caller
--     passes that back as the next batch's `from`, so each batch starts where the last one stopped;
--   * each batch deletes the rows it chose by their position (ctid, read in the same statement, so
--     the same row versions), not through the primary key.
-- Measured on 900,000 processed 100-day-old rows, batches of 500, no ingest: 9.8 s in all before,
-- 4.7 s by position alone, 1.8 s by position from where the last batch stopped (1.0 ms a batch from
-- the first to the last); WAL 91 MB against 75 MB (fewer index pages changed).
-- delete_processed_webhooks keeps its signature and answer (one batch from the oldest), now by
-- position; the runner's cleanup and storeops.cleanup_old_webhooks resume. A batch now takes about
-- a millisecond, so the shortest pause between two, not the duty, sets the pace: the procedure's
-- floor is 20 ms (was 10), as the runner's (runner.scheduler.CLEANUP_PAUSE), and a million rows take
-- about 50 s, as before. The new function restates the settings of 0043 and 0046 (lock_timeout,
-- backend_flush_after); delete_processed_webhooks, which now only calls it, drops its own (CREATE OR
-- REPLACE resets them; the rollback restores them).
-- depends: 0048_cron_cleanup_paces_itself

create function storeops.delete_processed_webhooks_from(p_table text, p_from timestamptz,
                                                        p_older_than interval default interval '90 days',
                                                        p_limit integer default 500,
                                                        p_now timestamptz default now(),
                                                        out deleted integer, out last_created_at timestamptz)
language plpgsql
set lock_timeout = '500ms'
set backend_flush_after = '256kB'
as $$
begin
  if p_older_than is null or p_older_than < interval '0' then
    raise exception 'delete_processed_webhooks: the age must be a non-negative interval, got %',
      coalesce(p_older_than::text, 'NULL') using errcode = '22023';
  end if;
  if p_limit is null or p_limit < 1 then
    raise exception 'delete_processed_webhooks: limit must not be negative or zero, got %', coalesce(p_limit::text, 'NULL')
      using errcode = '22023';
  end if;
  -- The DELETE re-checks both conditions on any row changed since the statement's snapshot, and a
  -- ctid read in the same statement names the row version that snapshot saw.
  if p_table = 'payment_webhooks' then
    with gone as (
      delete from storeops.payment_webhooks
      where ctid = any (array(select ctid from storeops.payment_webhooks
                              where processed and created_at < p_now - p_older_than
                                and created_at >= coalesce(p_from, '-infinity')
                              order by created_at
                              limit p_limit))
        and processed and created_at < p_now - p_older_than
      returning created_at)
    select count(*), max(created_at) into deleted, last_created_at from gone;
  elsif p_table = 'shipping_webhooks' then
    with gone as (
      delete from storeops.shipping_webhooks
      where ctid = any (array(select ctid from storeops.shipping_webhooks
                              where processed and created_at < p_now - p_older_than
                                and created_at >= coalesce(p_from, '-infinity')
                              order by created_at
                              limit p_limit))
        and processed and created_at < p_now - p_older_than
      returning created_at)
    select count(*), max(created_at) into deleted, last_created_at from gone;
  else
    raise exception 'delete_processed_webhooks: unknown table %', p_table using errcode = '22023',
      hint = 'use payment_webhooks or shipping_webhooks';
  end if;
  last_created_at := coalesce(last_created_at, p_from);
end
$$;
comment on function storeops.delete_processed_webhooks_from(text, timestamptz, interval, integer, timestamptz) is
  'Deletes one batch of the oldest processed webhooks older than p_older_than with created_at at or after p_from (NULL: from the oldest); never an unprocessed one. Returns how many, and the newest created_at among them (p_from when none): the next batch''s p_from, so that it starts where this one stopped instead of walking past the index entries of the rows deleted before it.';

create or replace function storeops.delete_processed_webhooks(p_table text, p_older_than interval default interval '90 days',
                                                              p_limit integer default 5000, p_now timestamptz default now())
returns integer
language sql
as $$
  select deleted from storeops.delete_processed_webhooks_from(p_table, null, p_older_than, p_limit, p_now)
$$;
comment on function storeops.delete_processed_webhooks(text, interval, integer, timestamptz) is
  'Deletes one batch of the oldest processed webhooks older than p_older_than; never an unprocessed one (the DELETE re-checks both conditions on any row changed meanwhile). A loop should use delete_processed_webhooks_from, which resumes where the last batch stopped.';

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
  v_from timestamptz;
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
    v_from := null;
    loop
      v_deleted := null;
      v_started := clock_timestamp();
      begin  -- a subtransaction: a batch that times out on a lock undoes only itself
        select deleted, last_created_at into v_deleted, v_from
        from storeops.delete_processed_webhooks_from(v_table, v_from, p_older_than, p_batch);
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
      perform pg_sleep(greatest(0.02, extract(epoch from clock_timestamp() - v_started) * (1 - p_duty) / p_duty));
    end loop;
  end loop;
  delete from storeops.scheduler_ticks where started_at < now() - interval '30 days';
  commit;
end
$$;
