-- Quality alerts: rules evaluated by a Temporal Schedule; an alert opens once per episode (the
-- rule held for its sustain time) and resolves itself when the rule clears.
CREATE TABLE quality_rules (
    id               text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_-]{1,63}$'),
    kind             text NOT NULL CHECK (kind IN ('first_response_p90', 'queue_age', 'csat_mean', 'coverage_gap')),
    region           text REFERENCES regions (id),
    module           text REFERENCES modules (id),
    language         text,
    threshold        double precision NOT NULL,
    window_minutes   integer NOT NULL DEFAULT 60 CHECK (window_minutes > 0),
    sustain_minutes  integer NOT NULL DEFAULT 0 CHECK (sustain_minutes >= 0),
    enabled          boolean NOT NULL DEFAULT true,
    -- When the rule's condition started to hold (NULL while it does not): the episode clock.
    breaching_since  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE quality_alerts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id      text NOT NULL REFERENCES quality_rules (id) ON DELETE CASCADE,
    opened_at    timestamptz NOT NULL,
    resolved_at  timestamptz,
    value        double precision,
    message      text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}',
    -- Set once the lead was told, so a retried evaluation still tells them (and only once).
    opened_told_at    timestamptz,
    resolved_told_at  timestamptz
);
-- At most one open alert per rule: an episode fires once.
CREATE UNIQUE INDEX quality_alerts_one_open ON quality_alerts (rule_id) WHERE resolved_at IS NULL;
