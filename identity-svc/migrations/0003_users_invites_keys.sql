-- Users, memberships, refresh tokens, invites and tenant API keys.
--
-- Platform-scope policies (`app.scope = 'platform'`) serve platform admins and
-- the system operations that run before any tenant is known: login, token
-- refresh, invite acceptance, API-key authentication.

CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    -- Stored lower-cased; login compares lower-cased input.
    email         text        NOT NULL,
    name          text        NOT NULL,
    password_hash text        NOT NULL,
    -- Platform staff belong to no tenant.
    is_platform_admin boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_email_lower CHECK (email = lower(email))
);

-- One tenant per user: the role a login yields is never ambiguous.
CREATE TABLE memberships (
    user_id    uuid        PRIMARY KEY REFERENCES users (id),
    tenant_id  uuid        NOT NULL REFERENCES tenants (id),
    role       text        NOT NULL CONSTRAINT memberships_role_check
                           CHECK (role IN ('customer_admin', 'operator')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX memberships_tenant ON memberships (tenant_id, user_id);

CREATE TABLE refresh_tokens (
    id          uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id),
    token_hash  bytea       NOT NULL CONSTRAINT refresh_tokens_hash_key UNIQUE,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE invites (
    id          uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    email       text        NOT NULL CONSTRAINT invites_email_lower CHECK (email = lower(email)),
    role        text        NOT NULL CONSTRAINT invites_role_check
                            CHECK (role IN ('customer_admin', 'operator')),
    token_hash  bytea       NOT NULL CONSTRAINT invites_token_hash_key UNIQUE,
    expires_at  timestamptz NOT NULL,
    accepted_at timestamptz,
    invited_by  uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invites_tenant ON invites (tenant_id, created_at);

CREATE TABLE api_keys (
    id          uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    name        text        NOT NULL CONSTRAINT api_keys_name_not_blank CHECK (btrim(name) <> ''),
    -- The visible start of the key, so admins can tell keys apart.
    prefix      text        NOT NULL,
    secret_hash bytea       NOT NULL CONSTRAINT api_keys_secret_hash_key UNIQUE,
    role        text        NOT NULL CONSTRAINT api_keys_role_check
                            CHECK (role IN ('customer_admin', 'operator')),
    created_by  uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens FORCE ROW LEVEL SECURITY;
ALTER TABLE invites ENABLE ROW LEVEL SECURITY;
ALTER TABLE invites FORCE ROW LEVEL SECURITY;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;

CREATE POLICY platform_scope ON users
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');
-- A tenant sees the users who are its members.
CREATE POLICY tenant_members ON users
    USING (EXISTS (
        SELECT 1 FROM memberships m
        WHERE m.user_id = users.id
          AND m.tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)));

CREATE POLICY platform_scope ON refresh_tokens
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');

CREATE POLICY platform_scope ON memberships
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');
CREATE POLICY tenant_isolation ON memberships
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));

CREATE POLICY platform_scope ON invites
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');
CREATE POLICY tenant_isolation ON invites
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));

CREATE POLICY platform_scope ON api_keys
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));

-- Platform admins read every tenant's audit trail.
CREATE POLICY platform_scope ON audit_events
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');

GRANT SELECT, INSERT, UPDATE ON users TO crewmesh_identity;
GRANT SELECT, INSERT ON memberships TO crewmesh_identity;
GRANT SELECT, INSERT, UPDATE ON refresh_tokens TO crewmesh_identity;
GRANT SELECT, INSERT, UPDATE ON invites TO crewmesh_identity;
GRANT SELECT, INSERT, UPDATE ON api_keys TO crewmesh_identity;
