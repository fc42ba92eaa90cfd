-- The last 10 payment gateway (Razorpay) health checks, newest first: status (healthy,
-- degraded, down), response time in ms and the error. Read-only.
-- Source: enterprise-systems-guide.md, Monitoring & Health Checks > View Health Checks.
-- Replace: nothing; runs as is ('payment_gateway' may be changed to 'domain_verification' or 'shipping_api').

SELECT * FROM system_health_checks 
WHERE check_type = 'payment_gateway'
ORDER BY checked_at DESC
LIMIT 10;
