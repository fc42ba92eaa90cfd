-- Why: the cleanup's backend reads through a table larger than shared_buffers, and to make room it
-- writes out dirty pages itself (the ones its DELETEs dirtied, among others). Those writes land in
-- the kernel's page cache and stay dirty until the kernel's flusher writes back what is older than
-- 30 s (vm.dirty_expire_centisecs), in one burst every 5 s. Every ingest commit's WAL fsync queues
-- behind such a burst: in section 6 of `make bench`, bursts of 60-75 MB of writeback held every
-- commit for 50-65 ms. backend_flush_after makes the kernel start writing each 256 kB the backend
-- writes at once (bgwriter_flush_after and checkpoint_flush_after do the same for those processes
-- by default), so the cleanup's writes go out as it goes instead of piling up. Measured in six
-- section-6 rounds: the page cache's dirty data peaked at 92-103 MB while the cleanup ran with it,
-- 186-206 MB without (the same with the setting for the whole cluster: the cleanup's backend is
-- the writer that matters).
-- depends: 0045_drop_unused_webhook_type_indexes

alter function storeops.delete_processed_webhooks(text, interval, integer, timestamptz)
  set backend_flush_after = '256kB';
