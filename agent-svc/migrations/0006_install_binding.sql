-- Slack installs are bound to the browser that started them (issue 11): the
-- gateway sets a short-lived cookie holding a random value when an admin
-- starts an install, and the OAuth callback must bring the same cookie
-- back. Only the value's SHA-256 is stored, as for the state. Without it, an
-- authorize link forwarded to someone else would attach their workspace to
-- this tenant.
--
-- Installs pending at deploy time (15 minutes at most) have no binding and
-- can never complete: they are dropped, and their admins start again.
DELETE FROM slack_install_states;
ALTER TABLE slack_install_states ADD COLUMN binding_hash bytea NOT NULL;
