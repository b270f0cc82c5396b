-- An API run's idempotency key is claimed before the provider is called, so
-- two concurrent requests with one key make one provider call; the key is
-- scoped to (tenant, agent), so two agents' runs never share an answer.

CREATE TABLE run_claims (
    tenant_id     uuid        NOT NULL,
    agent_id      uuid        NOT NULL,
    request_id    text        NOT NULL,
    -- A claim whose holder died lapses, and the next request takes it over.
    claimed_until timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, request_id)
);

ALTER TABLE run_claims ENABLE ROW LEVEL SECURITY;
ALTER TABLE run_claims FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON run_claims
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));
GRANT SELECT, INSERT, UPDATE, DELETE ON run_claims TO crewmesh_llm;

-- A key is unique per (tenant, agent) now, not per tenant: the claim keeps
-- it single, and the lookup joins the conversation's agent.
DROP INDEX messages_request_key;
CREATE INDEX messages_request ON messages (tenant_id, request_id) WHERE request_id IS NOT NULL;
