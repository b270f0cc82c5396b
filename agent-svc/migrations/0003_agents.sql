-- Agents (A1): tenant-scoped, with row-level security.

CREATE TABLE agents (
    id                  uuid        PRIMARY KEY,
    tenant_id           uuid        NOT NULL,
    name                text        NOT NULL CONSTRAINT agents_name_not_blank CHECK (btrim(name) <> ''),
    role_title          text        NOT NULL DEFAULT '',
    persona             text        NOT NULL DEFAULT '',
    instructions        text        NOT NULL DEFAULT '',
    -- "provider/model", e.g. openai/gpt-4o-mini.
    model               text        NOT NULL,
    tools               text[]      NOT NULL DEFAULT '{}',
    escalation          jsonb       NOT NULL DEFAULT '{"enabled": false}',
    escalation_assignee text        NOT NULL DEFAULT '',
    -- Exact: nano-dollars per month.
    budget_limit_nanos  bigint      NOT NULL CONSTRAINT agents_budget_check CHECK (budget_limit_nanos >= 0),
    active              boolean     NOT NULL DEFAULT true,
    -- Idempotency key of the create request.
    request_id          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agents_request_key UNIQUE (tenant_id, request_id)
);
CREATE INDEX agents_tenant ON agents (tenant_id, id);

ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agents
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));

-- Platform admins act on any tenant's agents by id.
CREATE POLICY platform_scope ON agents
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');

GRANT SELECT, INSERT, UPDATE, DELETE ON agents TO crewmesh_agent;
