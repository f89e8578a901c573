-- Business calendars: opening hours in a time zone, public holidays, one-off exceptions.
CREATE TABLE calendars (
    id                   text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_-]{1,63}$'),
    name                 text NOT NULL,
    timezone             text NOT NULL,
    always_open          boolean NOT NULL DEFAULT false,
    hours                jsonb NOT NULL DEFAULT '[]',
    holiday_country      text,
    holiday_subdivision  text,
    exceptions           jsonb NOT NULL DEFAULT '[]',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

INSERT INTO calendars (id, name, timezone, always_open) VALUES ('always', '24/7', 'UTC', true);
