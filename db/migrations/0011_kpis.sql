-- KPIs computed from the timeline (docs/kpis.md). Each ticket's facts are recomputed from its
-- events whenever its workflow projects new ones; daily rollups of the facts, one set per time
-- zone viewers use, answer long windows without reading every ticket.

CREATE TABLE ticket_facts (
    ticket_id               bigint PRIMARY KEY REFERENCES tickets (id),
    last_seq                integer NOT NULL,
    customer_id             text NOT NULL,
    created_at              timestamptz NOT NULL,
    region                  text,
    agent_id                text,
    module                  text,
    language                text,
    priority                text,
    channel                 text NOT NULL,
    calendar_id             text,
    first_response_at       timestamptz,
    first_response_s        float8,
    first_response_bs       float8,
    -- Durations' bins on the grid of domain/kpis.py (`bin_of`), so SQL only counts them.
    first_response_bin      smallint,
    first_response_bbin     smallint,
    resolved_at             timestamptz,
    resolution_s            float8,
    resolution_bs           float8,
    resolution_bin          smallint,
    resolution_bbin         smallint,
    pending_s               float8 NOT NULL DEFAULT 0,
    resolutions             integer NOT NULL DEFAULT 0,
    reopens                 integer NOT NULL DEFAULT 0,
    public_replies          integer NOT NULL DEFAULT 0,
    agent_resolved          boolean NOT NULL DEFAULT false,
    self_service            boolean NOT NULL DEFAULT false,
    first_contact           boolean NOT NULL DEFAULT false,
    csat_sent               integer NOT NULL DEFAULT 0,
    csat_received           integer NOT NULL DEFAULT 0,
    csat_score_sum          integer NOT NULL DEFAULT 0,
    csat_satisfied          integer NOT NULL DEFAULT 0,
    handoffs                integer NOT NULL DEFAULT 0,
    escalations             integer NOT NULL DEFAULT 0,
    sla_first_response      text CHECK (sla_first_response IN ('met', 'breached')),
    sla_resolution          text CHECK (sla_resolution IN ('met', 'breached')),
    sla_periodic_update     text CHECK (sla_periodic_update IN ('met', 'breached')),
    -- Next-response waits answered: their bins (one element per wait) and total seconds.
    nr_bins                 smallint[] NOT NULL DEFAULT '{}',
    nr_bbins                smallint[] NOT NULL DEFAULT '{}',
    nr_sum_s                float8 NOT NULL DEFAULT 0,
    nr_sum_bs               float8 NOT NULL DEFAULT 0,
    nr_met                  integer NOT NULL DEFAULT 0,
    nr_breached             integer NOT NULL DEFAULT 0,
    previous_same_issue_at  timestamptz,
    computed_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_facts_created ON ticket_facts (created_at);
CREATE INDEX ticket_facts_same_issue ON ticket_facts (customer_id, module, created_at);

-- Region legs: who was responsible for the open ticket when, and how fast they answered. The
-- ticket's creation and other dimensions are repeated, so legs are counted without a join.
CREATE TABLE ticket_legs (
    ticket_id     bigint NOT NULL REFERENCES ticket_facts (ticket_id),
    leg           smallint NOT NULL,
    region        text,
    agent_id      text,
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    held_s        float8 NOT NULL,
    owed          boolean NOT NULL,
    response_s    float8,
    response_bs   float8,
    response_bin  smallint,
    response_bbin smallint,
    created_at    timestamptz NOT NULL,
    module        text,
    language      text,
    priority      text,
    channel       text NOT NULL,
    PRIMARY KEY (ticket_id, leg)
);
CREATE INDEX ticket_legs_created ON ticket_legs (created_at);

-- When the ticket was open (created or reopened, until resolved): the backlog at any instant.
-- The ticket's creation and dimensions are repeated, so the backlog is counted without a join.
CREATE TABLE ticket_open_periods (
    ticket_id   bigint NOT NULL REFERENCES ticket_facts (ticket_id),
    opened_at   timestamptz NOT NULL,
    closed_at   timestamptz,
    created_at  timestamptz NOT NULL,
    region      text,
    agent_id    text,
    module      text,
    language    text,
    priority    text,
    channel     text NOT NULL,
    PRIMARY KEY (ticket_id, opened_at)
);
CREATE INDEX ticket_open_periods_opened ON ticket_open_periods (opened_at);
CREATE INDEX ticket_open_periods_closed ON ticket_open_periods (closed_at);
-- '(]': in the backlog at T means opened before T and not resolved before T.
CREATE INDEX ticket_open_periods_span ON ticket_open_periods
    USING gist (tstzrange(opened_at, closed_at, '(]'));

-- Time zones with rollups: UTC, every region's, and any added here.
CREATE TABLE kpi_timezones (
    timezone  text PRIMARY KEY,
    added_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO kpi_timezones (timezone) VALUES ('UTC');
INSERT INTO kpi_timezones (timezone) SELECT DISTINCT timezone FROM regions ON CONFLICT DO NOTHING;

-- One row per local day, time zone and group: the facts of tickets created that day added up
-- (legs under the leg's region and agent), and the backlog's moves (tickets opened minus
-- resolved that day). `grouping` is the bit mask of the dimensions the row is grouped by
-- (region 1, module 2, language 4, agent 8, priority 16, channel 32); the others are NULL.
CREATE TABLE kpi_daily (
    timezone                  text NOT NULL,
    day                       date NOT NULL,
    grouping                  smallint NOT NULL,
    region                    text,
    module                    text,
    language                  text,
    agent_id                  text,
    priority                  text,
    channel                   text,
    tickets                   float8 NOT NULL DEFAULT 0,
    first_responses           float8 NOT NULL DEFAULT 0,
    first_response_s          float8 NOT NULL DEFAULT 0,
    first_response_bs         float8 NOT NULL DEFAULT 0,
    resolved                  float8 NOT NULL DEFAULT 0,
    resolution_s              float8 NOT NULL DEFAULT 0,
    resolution_bs             float8 NOT NULL DEFAULT 0,
    ever_resolved             float8 NOT NULL DEFAULT 0,
    reopened                  float8 NOT NULL DEFAULT 0,
    reopens                   float8 NOT NULL DEFAULT 0,
    agent_resolved            float8 NOT NULL DEFAULT 0,
    first_contact             float8 NOT NULL DEFAULT 0,
    self_service              float8 NOT NULL DEFAULT 0,
    csat_sent                 float8 NOT NULL DEFAULT 0,
    csat_received             float8 NOT NULL DEFAULT 0,
    csat_score                float8 NOT NULL DEFAULT 0,
    csat_satisfied            float8 NOT NULL DEFAULT 0,
    repeat_1d                 float8 NOT NULL DEFAULT 0,
    repeat_7d                 float8 NOT NULL DEFAULT 0,
    repeat_14d                float8 NOT NULL DEFAULT 0,
    repeat_30d                float8 NOT NULL DEFAULT 0,
    handoffs                  float8 NOT NULL DEFAULT 0,
    handed_off                float8 NOT NULL DEFAULT 0,
    escalations               float8 NOT NULL DEFAULT 0,
    escalated                 float8 NOT NULL DEFAULT 0,
    fr_met                    float8 NOT NULL DEFAULT 0,
    fr_breached               float8 NOT NULL DEFAULT 0,
    res_met                   float8 NOT NULL DEFAULT 0,
    res_breached              float8 NOT NULL DEFAULT 0,
    pu_met                    float8 NOT NULL DEFAULT 0,
    pu_breached               float8 NOT NULL DEFAULT 0,
    nr_met                    float8 NOT NULL DEFAULT 0,
    nr_breached               float8 NOT NULL DEFAULT 0,
    waits                     float8 NOT NULL DEFAULT 0,
    next_response_s           float8 NOT NULL DEFAULT 0,
    next_response_bs          float8 NOT NULL DEFAULT 0,
    legs                      float8 NOT NULL DEFAULT 0,
    legs_owed                 float8 NOT NULL DEFAULT 0,
    legs_answered             float8 NOT NULL DEFAULT 0,
    leg_response_s            float8 NOT NULL DEFAULT 0,
    leg_response_bs           float8 NOT NULL DEFAULT 0,
    legs_ended                float8 NOT NULL DEFAULT 0,
    leg_hold_s                float8 NOT NULL DEFAULT 0,
    backlog                   float8 NOT NULL DEFAULT 0,
    backlog_created_epoch     float8 NOT NULL DEFAULT 0,
    -- Histograms over the duration grid of domain/kpis.py (16 bins per doubling from 1 s, 386
    -- in all); pgvector adds them up element by element in C.
    first_response            vector(386),
    first_response_business   vector(386),
    next_response             vector(386),
    next_response_business    vector(386),
    resolution                vector(386),
    resolution_business       vector(386),
    region_response           vector(386),
    region_response_business  vector(386)
) WITH (toast_tuple_target = 128);
-- pgvector keeps vectors uncompressed out of line; these histograms are mostly zeros, so kept
-- compressed in the row they take a twentieth of the space and add up faster.
ALTER TABLE kpi_daily
    ALTER COLUMN first_response SET STORAGE MAIN,
    ALTER COLUMN first_response_business SET STORAGE MAIN,
    ALTER COLUMN next_response SET STORAGE MAIN,
    ALTER COLUMN next_response_business SET STORAGE MAIN,
    ALTER COLUMN resolution SET STORAGE MAIN,
    ALTER COLUMN resolution_business SET STORAGE MAIN,
    ALTER COLUMN region_response SET STORAGE MAIN,
    ALTER COLUMN region_response_business SET STORAGE MAIN;
CREATE UNIQUE INDEX kpi_daily_key ON kpi_daily
    (timezone, grouping, day, region, module, language, agent_id, priority, channel) NULLS NOT DISTINCT;

-- Days whose rows are built, per time zone (a day without tickets is built and has no rows).
CREATE TABLE kpi_days (
    timezone  text NOT NULL,
    day       date NOT NULL,
    built_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (timezone, day)
);

-- Tickets whose facts changed since the rollups were built, and what the rollups hold of them:
-- their facts, legs and open periods as they were then (nothing for a ticket new since). A query
-- adds each such ticket's current facts and takes away the held ones, so rollups are never stale;
-- a refresh rebuilds the days they touch and forgets them. `version` tells a refresh whether a
-- ticket changed again meanwhile.
CREATE SEQUENCE kpi_pending_version;
CREATE TABLE kpi_pending (
    ticket_id  bigint PRIMARY KEY REFERENCES tickets (id),
    version    bigint NOT NULL
);
CREATE TABLE kpi_held_facts (LIKE ticket_facts INCLUDING DEFAULTS, PRIMARY KEY (ticket_id),
                             FOREIGN KEY (ticket_id) REFERENCES tickets (id));
CREATE TABLE kpi_held_legs (LIKE ticket_legs INCLUDING DEFAULTS, PRIMARY KEY (ticket_id, leg),
                            FOREIGN KEY (ticket_id) REFERENCES tickets (id));
CREATE TABLE kpi_held_periods (LIKE ticket_open_periods INCLUDING DEFAULTS, PRIMARY KEY (ticket_id, opened_at),
                               FOREIGN KEY (ticket_id) REFERENCES tickets (id));
