-- The audit log: tenant-scoped and append-only.
--
-- Row-level security is the convention every tenant-scoped table follows:
-- ENABLE + FORCE (so even the owner is filtered), and a policy on the
-- transaction-local `app.tenant_id`. NULLIF turns the '' that a finished
-- transaction leaves behind into NULL, so "no tenant set" matches no row.
-- The sub-select makes PostgreSQL evaluate the setting once per statement.

REVOKE ALL ON SCHEMA identity FROM PUBLIC;

CREATE TABLE audit_events (
    id              uuid        PRIMARY KEY,
    tenant_id       uuid        NOT NULL,
    actor_user_id   uuid,
    impersonator_id uuid,
    action          text        NOT NULL CONSTRAINT audit_events_action_not_blank CHECK (action <> ''),
    target_user_id  uuid,
    client_addr     text,
    user_agent      text,
    details         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_events_tenant_time ON audit_events (tenant_id, occurred_at DESC);

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON audit_events
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));

-- Append-only: the runtime role may read and add, never change or remove.
GRANT SELECT, INSERT ON audit_events TO crewmesh_identity;
