-- Where the parcels of one order are now: each shipment of the order with its latest tracking
-- scan (status, location, time); a shipment without scans yet still appears, with NULLs. Read-only.
-- Source: enterprise-systems-guide.md, Shipping System > Tracking Updates > Get Current Status.
-- Replace: 'order-uuid' with the order's id (orders.id).

SELECT 
  s.*,
  st.status as current_tracking_status,
  st.location as current_location,
  st.timestamp as last_update
FROM shiprocket_shipments s
LEFT JOIN LATERAL (
  SELECT status, location, timestamp
  FROM shipping_tracking_updates
  WHERE shipment_id = s.id
  ORDER BY timestamp DESC
  LIMIT 1
) st ON true
WHERE s.order_id = 'order-uuid';
