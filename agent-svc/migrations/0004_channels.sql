-- Channel connections (A5): a Slack workspace or a WhatsApp business number,
-- bound to a tenant and one of its agents. Tokens are Fernet tokens under the
-- platform keyring; the plaintext never reaches the database.

-- Lets a connection reference (tenant, agent) so the database itself refuses
-- a binding to another tenant's agent: foreign-key checks ignore RLS.
ALTER TABLE agents ADD CONSTRAINT agents_tenant_id_key UNIQUE (tenant_id, id);

CREATE TABLE channel_connections (
    id               uuid        PRIMARY KEY,
    tenant_id        uuid        NOT NULL,
    agent_id         uuid        NOT NULL,
    channel          text        NOT NULL CONSTRAINT channel_connections_channel_check
                                 CHECK (channel IN ('slack', 'whatsapp')),
    -- Slack team id or WhatsApp phone_number_id: what inbound events carry.
    external_id      text        NOT NULL,
    default_channel  text        NOT NULL DEFAULT '',
    token_ciphertext text        NOT NULL,
    token_hint       text        NOT NULL,
    display_name     text        NOT NULL DEFAULT '',
    bot_user_id      text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    rotated_at       timestamptz,
    -- One owner per workspace or number, platform-wide: inbound routing must be unambiguous.
    CONSTRAINT channel_connections_external_key UNIQUE (channel, external_id),
    CONSTRAINT channel_connections_agent_fkey FOREIGN KEY (tenant_id, agent_id)
        REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX channel_connections_tenant ON channel_connections (tenant_id, created_at);
CREATE INDEX channel_connections_agent ON channel_connections (tenant_id, agent_id);

ALTER TABLE channel_connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE channel_connections FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON channel_connections
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));
-- Inbound resolution (which tenant owns this workspace?), key rotation and
-- platform admins work across tenants.
CREATE POLICY platform_scope ON channel_connections
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');

GRANT SELECT, INSERT, UPDATE, DELETE ON channel_connections TO crewmesh_agent;

-- Pending Slack installs: the OAuth state, stored as a SHA-256 hash, single
-- use, short-lived. The callback arrives without a user, so it is consumed
-- in platform scope.
CREATE TABLE slack_install_states (
    state_hash bytea       PRIMARY KEY,
    tenant_id  uuid        NOT NULL,
    agent_id   uuid        NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT slack_install_states_agent_fkey FOREIGN KEY (tenant_id, agent_id)
        REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX slack_install_states_expiry ON slack_install_states (expires_at);

ALTER TABLE slack_install_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE slack_install_states FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON slack_install_states
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));
CREATE POLICY platform_scope ON slack_install_states
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');

GRANT SELECT, INSERT, DELETE ON slack_install_states TO crewmesh_agent;
