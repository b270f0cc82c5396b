-- Agents' budgets on their way to billing-svc (issue 11). A save of an
-- agent writes the budget here in its own transaction; after the commit the
-- request pushes it with SetAgentBudget, and a relay retries whatever did
-- not land (billing-svc down, a crash between commit and push). So a
-- committed budget is never lost, and no database connection waits on
-- billing-svc.
--
-- One row per agent, holding the newest limit: a push sends what the row
-- says when it is claimed, so budgets cannot land out of order.
CREATE TABLE agent_budget_outbox (
    agent_id        uuid        PRIMARY KEY,
    tenant_id       uuid        NOT NULL,
    limit_nanos     bigint      NOT NULL CONSTRAINT agent_budget_outbox_limit_check CHECK (limit_nanos >= 0),
    -- Bumped by every save; a push removes the row only if it sent this version.
    version         bigint      NOT NULL DEFAULT 1,
    attempts        integer     NOT NULL DEFAULT 0,
    -- Not before this: a push in flight holds the row by setting it ahead
    -- (one pusher per agent at a time), a failed one backs off.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_budget_outbox_agent_fkey FOREIGN KEY (tenant_id, agent_id)
        REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_budget_outbox_due ON agent_budget_outbox (next_attempt_at);

ALTER TABLE agent_budget_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_budget_outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_budget_outbox
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));
-- The relay works across tenants; platform admins save any tenant's agents.
CREATE POLICY platform_scope ON agent_budget_outbox
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');

GRANT SELECT, INSERT, UPDATE, DELETE ON agent_budget_outbox TO crewmesh_agent;
