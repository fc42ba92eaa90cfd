-- Back to 0054 as deployed: the orders noted when 0055 ran are forgotten again (the summary alert
-- stays, as every alert). Orders noted since by the triggers stay.
delete from storeops.cancelled_paid_orders c
using storeops.alerts a
where a.kind = 'refund_owed' and a.tenant_id is null
  and a.details ->> 'why' = 'cancelled orders holding money, found when storeops learned to look for them'
  and c.flagged_at = a.created_at;
