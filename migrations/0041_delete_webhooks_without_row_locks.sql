-- Why: delete_processed_webhooks locked each batch (SELECT ... FOR UPDATE SKIP LOCKED) before
-- deleting it. Locking a row writes its own WAL record, so every deleted row cost two records, and
-- the cleanup's WAL is what ingest commits queue behind while it runs (bench section 6). Measured
-- on a million 90-day-old rows: 303 MB of WAL before, 250 MB after (105 MB with wal_compression).
-- Now the DELETE carries the conditions itself: a row that another transaction changes meanwhile
-- (someone marking it unprocessed again by hand) is waited for and re-checked against them by the
-- DELETE (READ COMMITTED re-evaluates the WHERE clause on the new row version), so an unprocessed
-- webhook is still never deleted. Waiting is new: see 0043, which makes the cleanup give up a
-- batch before a deadlock could form with a transaction holding old webhook rows (re-applying them).
-- depends: 0040_create_runner_support

create or replace function storeops.delete_processed_webhooks(p_table text, p_older_than interval default interval '90 days',
                                                              p_limit integer default 5000, p_now timestamptz default now())
returns integer
language plpgsql
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
                          limit p_limit))
      and processed and created_at < p_now - p_older_than;
  elsif p_table = 'shipping_webhooks' then
    delete from storeops.shipping_webhooks
    where id = any (array(select id from storeops.shipping_webhooks
                          where processed and created_at < p_now - p_older_than
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
  'Deletes one batch of processed webhooks older than p_older_than; never an unprocessed one (the DELETE re-checks both conditions on any row changed meanwhile).';
