-- Usage metering and agent budgets. Money is integer nano-dollars (exact).

CREATE TABLE usage_events (
    -- Chosen by llm-svc per provider call: a redelivered settlement is recorded once.
    call_id           text        PRIMARY KEY,
    tenant_id         uuid        NOT NULL,
    agent_id          uuid        NOT NULL,
    conversation_id   uuid,
    model             text        NOT NULL,
    prompt_tokens     bigint      NOT NULL CONSTRAINT usage_events_prompt_check CHECK (prompt_tokens >= 0),
    completion_tokens bigint      NOT NULL CONSTRAINT usage_events_completion_check CHECK (completion_tokens >= 0),
    cost_nanos        bigint      NOT NULL CONSTRAINT usage_events_cost_check CHECK (cost_nanos >= 0),
    occurred_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_events_agent_time ON usage_events (tenant_id, agent_id, occurred_at);
CREATE INDEX usage_events_tenant_time ON usage_events (tenant_id, occurred_at);
CREATE INDEX usage_events_conversation ON usage_events (tenant_id, conversation_id);

-- Each agent's monthly limit, pushed by agent-svc when the agent is saved.
CREATE TABLE agent_budgets (
    tenant_id   uuid        NOT NULL,
    agent_id    uuid        NOT NULL,
    limit_nanos bigint      NOT NULL CONSTRAINT agent_budgets_limit_check CHECK (limit_nanos >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, agent_id)
);

ALTER TABLE usage_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_events FORCE ROW LEVEL SECURITY;
ALTER TABLE agent_budgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_budgets FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON usage_events
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));
CREATE POLICY tenant_isolation ON agent_budgets
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));

-- Append-only: usage is never edited.
GRANT SELECT, INSERT ON usage_events TO crewmesh_billing;
GRANT SELECT, INSERT, UPDATE ON agent_budgets TO crewmesh_billing;
