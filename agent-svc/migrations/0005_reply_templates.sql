-- WhatsApp reply templates (issue 10). Meta accepts free-form messages only
-- within 24 hours of the customer's last message; past that window a reply
-- can go out only as an approved template, so a number may name one. The
-- template takes one body variable ({{1}}), which receives the reply text.
-- Empty means none; Slack has no such window, so Slack connections never
-- carry one.
ALTER TABLE channel_connections
    ADD COLUMN reply_template_name     text NOT NULL DEFAULT '',
    ADD COLUMN reply_template_language text NOT NULL DEFAULT '',
    -- A name without a language (or the reverse) cannot be sent.
    ADD CONSTRAINT channel_connections_reply_template_pair
        CHECK ((reply_template_name = '') = (reply_template_language = '')),
    ADD CONSTRAINT channel_connections_reply_template_whatsapp
        CHECK (reply_template_name = '' OR channel = 'whatsapp');
