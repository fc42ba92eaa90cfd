-- Why: the seed's manual resolution is a plain UPDATE (status = 'resolved', notes, reconciled_at,
-- reconciled_by). People forget the last two, and a Supabase user resolving through the API has no
-- uuid to type. A trigger makes "who and when" true whoever resolves a row: reconciled_at defaults
-- to the time of the change, reconciled_by to the JWT subject (request.jwt.claims ->> 'sub'), and
-- the database role is always recorded.
-- depends: 0010_create_razorpay_payments

create function storeops_private.record_reconciliation_resolution() returns trigger
language plpgsql
as $$
declare
  v_claims jsonb;
  v_sub uuid;
begin
  if new.status = 'resolved' and (tg_op = 'INSERT' or old.status is distinct from 'resolved') then
    if new.reconciled_at is null or (tg_op = 'UPDATE' and new.reconciled_at is not distinct from old.reconciled_at) then
      new.reconciled_at := now();
    end if;
    if new.reconciled_by is null or (tg_op = 'UPDATE' and new.reconciled_by is not distinct from old.reconciled_by) then
      begin
        v_claims := nullif(nullif(current_setting('request.jwt.claims', true), ''), 'null')::jsonb;
        v_sub := (v_claims ->> 'sub')::uuid;
      exception when invalid_text_representation then
        v_sub := null;  -- a subject that is not a uuid (or claims that are not JSON): keep what was given
      end;
      new.reconciled_by := coalesce(v_sub, new.reconciled_by);
    end if;
    new.reconciled_by_role := current_user;
  end if;
  return new;
end
$$;
comment on function storeops_private.record_reconciliation_resolution() is
  'On resolving a reconciliation: fills reconciled_at (now) and reconciled_by (JWT sub) when the statement did not set them, and records the database role.';
create trigger payment_reconciliation_record_resolution before insert or update on storeops.payment_reconciliation
  for each row execute function storeops_private.record_reconciliation_resolution();
