-- Shared, named shift patterns per region, rotating over one or more weeks. An agent on a
-- pattern works it `rotation_offset` weeks ahead of week 1 instead of their own weekly shift.
CREATE TABLE shift_patterns (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_-]{1,63}$'),
    name        text NOT NULL,
    region_id   text NOT NULL REFERENCES regions (id),
    anchor      date NOT NULL CHECK (extract(isodow FROM anchor) = 1),
    -- One JSON list of {days, start, end} shifts per week of the rotation.
    weeks       jsonb NOT NULL CHECK (jsonb_typeof(weeks) = 'array' AND jsonb_array_length(weeks) BETWEEN 1 AND 12),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, region_id)
);

ALTER TABLE agents
    ADD COLUMN shift_pattern_id text,
    ADD COLUMN rotation_offset integer NOT NULL DEFAULT 0 CHECK (rotation_offset BETWEEN 0 AND 11),
    -- The pattern's times are read in its region's zone, so only that region's agents may work it.
    ADD CONSTRAINT agents_shift_pattern_same_region
        FOREIGN KEY (shift_pattern_id, region_id) REFERENCES shift_patterns (id, region_id);
CREATE INDEX agents_shift_pattern ON agents (shift_pattern_id) WHERE shift_pattern_id IS NOT NULL;
