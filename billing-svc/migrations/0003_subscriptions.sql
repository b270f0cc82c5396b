-- The tenant's plan, Stripe subscription state and agent quota, and every
-- Stripe event received (by id, so a redelivery changes nothing).

CREATE TABLE tenant_billing (
    tenant_id           uuid        PRIMARY KEY,
    stripe_customer_id  text        CONSTRAINT tenant_billing_customer_key UNIQUE,
    subscription_id     text,
    subscription_status text        NOT NULL CONSTRAINT tenant_billing_status_check CHECK (subscription_status IN
                                    ('trialing', 'active', 'past_due', 'unpaid', 'canceled',
                                     'incomplete', 'incomplete_expired', 'paused')),
    plan                text        NOT NULL,
    agent_quota         integer     NOT NULL CONSTRAINT tenant_billing_quota_check CHECK (agent_quota >= 0),
    trial_ends_at       timestamptz,
    -- `created` of the Stripe event the subscription state came from: an older
    -- event arriving late never moves the state backwards.
    state_as_of         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE tenant_billing ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_billing FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_billing
    USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid));
-- Stripe webhooks name a customer, not a tenant: they run in the platform scope.
CREATE POLICY platform_scope ON tenant_billing
    USING ((SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK ((SELECT current_setting('app.scope', true)) = 'platform');

-- Global: Stripe's events belong to the platform account, not to a tenant.
CREATE TABLE stripe_events (
    id          text        PRIMARY KEY,
    type        text        NOT NULL,
    created     timestamptz NOT NULL,
    payload     jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE ON tenant_billing TO crewmesh_billing;
GRANT SELECT, INSERT ON stripe_events TO crewmesh_billing;
