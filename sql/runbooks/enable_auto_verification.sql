-- Enable auto-verification for one custom domain: the scheduler then re-checks its DNS
-- (TXT ownership token, CNAME/A routing) by itself instead of waiting for someone to press verify.
-- Changes one row of custom_domains; updated_at moves with it.
-- Source: enterprise-systems-guide.md, Domain System > Usage > Enable Auto-Verification.
-- Replace: 'domain-id' with the domain's id (custom_domains.id).

UPDATE custom_domains 
SET auto_verify = true 
WHERE id = 'domain-id';
