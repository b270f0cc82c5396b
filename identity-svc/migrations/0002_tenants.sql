-- Tenants. A tenant's users see their own tenant's row; listing every tenant
-- needs the platform scope, which the service sets only for platform admins.

CREATE TABLE tenants (
    id         uuid        PRIMARY KEY,
    slug       text        NOT NULL,
    name       text        NOT NULL,
    -- Idempotency key of the create request: a retry returns the first result.
    request_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_slug_key UNIQUE (slug),
    CONSTRAINT tenants_request_id_key UNIQUE (request_id),
    CONSTRAINT tenants_slug_format CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{1,61})[a-z0-9]$'),
    CONSTRAINT tenants_name_not_blank CHECK (btrim(name) <> '')
);

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;

CREATE POLICY own_tenant ON tenants
    USING (id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));

CREATE POLICY platform_scope ON tenants
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');

GRANT SELECT, INSERT ON tenants TO crewmesh_identity;
