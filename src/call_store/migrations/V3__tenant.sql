-- The call store, version 3: the customer each call belongs to (`[[tenants]]`, `[mapping]
-- tenant`; the PBX's id when none is set), so a provider's queries pick one customer.
ALTER TABLE calls ADD COLUMN tenant_id text;
CREATE INDEX calls_tenant_start ON calls (tenant_id, start_time);
