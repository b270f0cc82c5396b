-- Tenants' own LLM provider keys, encrypted with the platform keyring
-- (Fernet, newest key first). Only the last four characters stay readable.

CREATE TABLE llm_keys (
    id          uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL,
    provider    text        NOT NULL CONSTRAINT llm_keys_provider_format CHECK (provider ~ '^[a-z][a-z0-9_-]{1,31}$'),
    ciphertext  text        NOT NULL,
    key_hint    text        NOT NULL,
    -- For OpenAI-compatible servers (Ollama, vLLM, gateways).
    base_url    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz,
    CONSTRAINT llm_keys_tenant_provider_key UNIQUE (tenant_id, provider)
);

ALTER TABLE llm_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE llm_keys FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON llm_keys
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));

-- Key rotation walks every tenant's keys.
CREATE POLICY platform_scope ON llm_keys
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');

GRANT SELECT, INSERT, UPDATE, DELETE ON llm_keys TO crewmesh_billing;
