-- Deny by default: only the grants later migrations make reach the runtime role.
REVOKE ALL ON SCHEMA agent FROM PUBLIC;
