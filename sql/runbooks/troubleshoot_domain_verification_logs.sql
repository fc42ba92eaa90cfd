-- Troubleshooting "domain verification failing": every verification attempt of one domain,
-- newest first, with the error and what each DNS lookup saw. Read-only.
-- Source: enterprise-systems-guide.md, Troubleshooting > Domain Verification Failing, step 1.
-- Replace: 'id' with the domain's id (custom_domains.id).

SELECT * FROM domain_verification_logs WHERE domain_id = 'id' ORDER BY verified_at DESC;
