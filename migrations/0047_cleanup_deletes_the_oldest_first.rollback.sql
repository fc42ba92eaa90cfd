-- Back to 0041's definition (no order; each batch scans from the table's start), with the settings of 0043 and 0046.
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
