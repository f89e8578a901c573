-- CSAT that closes the loop: signed single-use survey links, recovery of unhappy customers,
-- praise for the engineers, and open feedback that belongs to no ticket.
CREATE TABLE app_secrets (
    name        text PRIMARY KEY,
    value       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE surveys (
    id           uuid PRIMARY KEY,
    ticket_id    bigint NOT NULL REFERENCES tickets (id),
    customer_id  text NOT NULL,
    language     text NOT NULL,
    expires_at   timestamptz NOT NULL,
    sent_at      timestamptz NOT NULL DEFAULT now(),
    used_at      timestamptz
);
CREATE INDEX surveys_ticket ON surveys (ticket_id);

CREATE TABLE recoveries (
    ticket_id    bigint PRIMARY KEY REFERENCES tickets (id),
    region       text,
    lead_id      text,
    score        smallint NOT NULL,
    comment      text,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'overdue', 'done')),
    due_at       timestamptz NOT NULL,
    done_at      timestamptz,
    done_by      text,
    note         text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE praise (
    ticket_id   bigint NOT NULL REFERENCES tickets (id),
    agent_id    text NOT NULL REFERENCES agents (id),
    score       smallint NOT NULL,
    comment     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ticket_id, agent_id)
);

CREATE TABLE feedback (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  text REFERENCES customers (id),
    module       text NOT NULL REFERENCES modules (id),
    language     text,
    body         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_module_time ON feedback (module, created_at);
