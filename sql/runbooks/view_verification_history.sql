-- Verification history of one custom domain, newest attempt first: success, the error a person
-- can act on, and dns_records (what each DNS lookup saw: name, type, answers, rcode, TTL, resolver).
-- Read-only.
-- Source: enterprise-systems-guide.md, Domain System > Usage > View Verification History.
-- Replace: 'domain-id' with the domain's id (custom_domains.id).

SELECT * FROM domain_verification_logs 
WHERE domain_id = 'domain-id' 
ORDER BY verified_at DESC;
