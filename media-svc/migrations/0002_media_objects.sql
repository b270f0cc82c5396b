-- Media objects (M1, M2): metadata of what is in object storage, per tenant,
-- with row-level security. The bytes live in S3 under tenants/{tenant_id}/.

CREATE TABLE media_objects (
    id           uuid        PRIMARY KEY,
    tenant_id    uuid        NOT NULL,
    -- Always under the tenant's prefix, so a key can never name another tenant's object.
    object_key   text        NOT NULL
        CONSTRAINT media_objects_key_under_tenant
        CHECK (starts_with(object_key, 'tenants/' || tenant_id::text || '/')),
    -- Bare media type (no parameters), from the allowlist.
    content_type text        NOT NULL,
    size_bytes   bigint      NOT NULL CONSTRAINT media_objects_size_check CHECK (size_bytes >= 0),
    -- Hex SHA-256 of the bytes when media-svc saw them (ingest); NULL for client uploads.
    sha256       text,
    source       text        NOT NULL
        CONSTRAINT media_objects_source_check CHECK (source IN ('upload', 'whatsapp', 'slack')),
    -- pending: a presigned PUT was issued; ready: the bytes are in storage.
    status       text        NOT NULL
        CONSTRAINT media_objects_status_check CHECK (status IN ('pending', 'ready')),
    filename     text        NOT NULL DEFAULT '',
    -- The channel's message id: ingest is idempotent on it.
    message_id   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT media_objects_key UNIQUE (object_key),
    CONSTRAINT media_objects_message_key UNIQUE (tenant_id, source, message_id)
);
CREATE INDEX media_objects_tenant ON media_objects (tenant_id, created_at);

ALTER TABLE media_objects ENABLE ROW LEVEL SECURITY;
ALTER TABLE media_objects FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON media_objects
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));

-- Platform admins read any tenant's media by id.
CREATE POLICY platform_scope ON media_objects
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');

-- Metadata is written once; only an upload's status moves (pending → ready).
-- No DELETE: nothing removes media yet, and a grant nobody uses is a risk.
GRANT SELECT, INSERT ON media_objects TO crewmesh_media;
GRANT UPDATE (status) ON media_objects TO crewmesh_media;
