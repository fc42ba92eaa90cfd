alter function storeops.delete_processed_webhooks(text, interval, integer, timestamptz) reset backend_flush_after;
