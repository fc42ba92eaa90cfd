-- Why, two follow-ups to 0041 and 0042 (found in review):
--  * Since 0041 the cleanup's DELETE waits for a row another transaction has locked (it used to
--    skip it). apply_payment_webhook/apply_shipping_webhook and run_webhook_retries lock webhook
--    rows, processed ones too, so a transaction holding old row A and waiting for old row B that
--    the cleanup holds while it waits for A would deadlock. With a lock timeout shorter than
--    deadlock_timeout (1 s) the cleanup gives up first, always: it is the one that can wait a
--    week. The runner's cleanup pauses and tries that batch again (runner/scheduler.py).
--  * 0042's cached plan of refresh_order_payment_state was built under the settings of whoever
--    called it first in a session: process_payment_webhooks (generic plans, no sequential scans)
--    or a refund or retry (custom plans, sequential scans allowed). The function now carries
--    those settings itself, so its plan is the same whoever calls it, and is made once per session.
-- depends: 0042_plan_order_refresh_once

alter function storeops.delete_processed_webhooks(text, interval, integer, timestamptz)
  set lock_timeout = '500ms';
alter function storeops_private.refresh_order_payment_state(uuid[])
  set plan_cache_mode = force_generic_plan;
alter function storeops_private.refresh_order_payment_state(uuid[])
  set enable_seqscan = off;
