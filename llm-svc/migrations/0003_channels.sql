-- Channel conversations, their message counts (the memory window's version)
-- and dead letters.

-- A Slack thread or a WhatsApp sender: the channel's own key for the
-- conversation (NULL for API conversations). The conversation id of a
-- channel conversation is derived from (tenant, agent, key), so a redelivered
-- message finds its conversation without a lookup table.
ALTER TABLE conversations ADD COLUMN external_key text;
CREATE UNIQUE INDEX conversations_external_key ON conversations (tenant_id, agent_id, external_key)
    WHERE external_key IS NOT NULL;
-- Messages written so far: the memory window in Redis is valid only for
-- the count it was built at.
ALTER TABLE conversations ADD COLUMN message_count bigint NOT NULL DEFAULT 0;
UPDATE conversations c
   SET message_count = (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id);

-- Messages that could not be handled (inbound) or delivered (outbound),
-- with the reason, for admins to read and retry. The payload is the queued
-- message as it was, so a retry re-queues exactly that.
CREATE TABLE dead_letters (
    id           uuid        PRIMARY KEY,
    -- NULL when the payload was unreadable: only the platform sees those.
    tenant_id    uuid,
    -- The dead-letter stream entry: ingesting it twice changes nothing.
    entry_id     text        NOT NULL CONSTRAINT dead_letters_entry_key UNIQUE,
    queue        text        NOT NULL CONSTRAINT dead_letters_queue_check
                             CHECK (queue IN ('inbound', 'outbound', 'unknown')),
    message_id   text        NOT NULL,
    ordering_key text        NOT NULL,
    reason       text        NOT NULL,
    detail       text        NOT NULL DEFAULT '',
    attempts     integer     NOT NULL,
    channel      text        NOT NULL DEFAULT '',
    -- What the customer wrote or what was to be sent, for the admin's eyes.
    text         text        NOT NULL DEFAULT '',
    payload      bytea       NOT NULL,
    failed_at    timestamptz NOT NULL,
    retried_at   timestamptz,
    retried_by   text        NOT NULL DEFAULT ''
);
CREATE INDEX dead_letters_tenant ON dead_letters (tenant_id, failed_at DESC, id DESC);

ALTER TABLE dead_letters ENABLE ROW LEVEL SECURITY;
ALTER TABLE dead_letters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON dead_letters
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));
-- Ingestion (the payload names the tenant) and platform admins work across tenants.
CREATE POLICY platform_scope ON dead_letters
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');

GRANT SELECT, INSERT ON dead_letters TO crewmesh_llm;
-- A retry records when and by whom; nothing else changes.
GRANT UPDATE (retried_at, retried_by) ON dead_letters TO crewmesh_llm;
