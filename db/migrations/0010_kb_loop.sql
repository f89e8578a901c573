-- What the knowledge base learns from tickets: each ticket's text as a vector (suggestions,
-- possible duplicates, repeat issues), links between tickets, and "problem" records for groups
-- of tickets with one root cause, sent on to the engineering tracker.
CREATE TABLE ticket_embeddings (
    ticket_id        bigint PRIMARY KEY REFERENCES tickets (id),
    customer_id      text NOT NULL,
    module           text NOT NULL,
    embedding        vector(384) NOT NULL,
    embedding_model  text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_embeddings_customer ON ticket_embeddings (customer_id);

CREATE TABLE ticket_links (
    ticket_id        bigint NOT NULL REFERENCES tickets (id),
    linked_ticket_id bigint NOT NULL REFERENCES tickets (id),
    kind             text NOT NULL CHECK (kind IN ('possible_duplicate')),
    similarity       real NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ticket_id, linked_ticket_id, kind),
    CHECK (ticket_id <> linked_ticket_id)
);

CREATE TABLE problems (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    module        text NOT NULL REFERENCES modules (id),
    title         text NOT NULL,
    summary       text NOT NULL,
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'sent', 'closed')),
    tracker_key   text,
    tracker_url   text,
    sent_at       timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE problem_tickets (
    problem_id  bigint NOT NULL REFERENCES problems (id),
    -- A ticket belongs to at most one problem, so a rerun of the grouping never counts it twice.
    ticket_id   bigint NOT NULL UNIQUE REFERENCES tickets (id),
    similarity  real NOT NULL,
    PRIMARY KEY (problem_id, ticket_id)
);
