-- Tracking history of one shipment, latest scan first: status, location and time of each scan
-- Shiprocket reported (webhook or poll). Read-only.
-- Source: enterprise-systems-guide.md, Shipping System > Tracking Updates > View Tracking History.
-- Replace: 'shipment-uuid' with the shipment's id (shiprocket_shipments.id).

SELECT * FROM shipping_tracking_updates 
WHERE shipment_id = 'shipment-uuid' 
ORDER BY timestamp DESC;
