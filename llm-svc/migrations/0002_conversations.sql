-- Conversations and their messages (L3 persisted history, L8 runs, X4 cost
-- per conversation): tenant-scoped with row-level security.

CREATE TABLE conversations (
    id               uuid        PRIMARY KEY,
    tenant_id        uuid        NOT NULL,
    agent_id         uuid        NOT NULL,
    -- api, slack or whatsapp.
    channel          text        NOT NULL CONSTRAINT conversations_channel_check
                                 CHECK (channel IN ('api', 'slack', 'whatsapp')),
    topic            text        NOT NULL DEFAULT '',
    escalated        boolean     NOT NULL DEFAULT false,
    prompt_tokens    bigint      NOT NULL DEFAULT 0,
    completion_tokens bigint     NOT NULL DEFAULT 0,
    -- Exact: nano-dollars.
    cost_nanos       bigint      NOT NULL DEFAULT 0,
    started_at       timestamptz NOT NULL DEFAULT now(),
    last_message_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_tenant ON conversations (tenant_id, last_message_at DESC);
CREATE INDEX conversations_agent ON conversations (tenant_id, agent_id, last_message_at DESC);

CREATE TABLE messages (
    id                uuid        PRIMARY KEY,
    tenant_id         uuid        NOT NULL,
    conversation_id   uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              text        NOT NULL CONSTRAINT messages_role_check
                                  CHECK (role IN ('user', 'assistant')),
    text              text        NOT NULL,
    prompt_tokens     bigint      NOT NULL DEFAULT 0,
    completion_tokens bigint      NOT NULL DEFAULT 0,
    cost_nanos        bigint      NOT NULL DEFAULT 0,
    -- Why no model was called for this reply (e.g. budget_exceeded); '' when one was.
    refusal_reason    text        NOT NULL DEFAULT '',
    -- Idempotency key of the run that wrote this message (both of its rows).
    request_id        text,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX messages_conversation ON messages (tenant_id, conversation_id, created_at DESC);
CREATE UNIQUE INDEX messages_request_key ON messages (tenant_id, request_id, role)
    WHERE request_id IS NOT NULL;

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON conversations
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON messages
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));

GRANT SELECT, INSERT, UPDATE ON conversations TO crewmesh_llm;
-- Messages are history: written once.
GRANT SELECT, INSERT ON messages TO crewmesh_llm;
