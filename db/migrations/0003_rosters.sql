-- Roster overrides: time an agent is off despite their shift, or on despite not having one.
CREATE TABLE roster_overrides (
    id          uuid PRIMARY KEY,
    agent_id    text NOT NULL REFERENCES agents (id),
    kind        text NOT NULL CHECK (kind IN ('off', 'extra')),
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL CHECK (ends_at > starts_at),
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX roster_overrides_agent_time ON roster_overrides (agent_id, ends_at);
