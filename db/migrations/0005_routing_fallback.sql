-- A queued ticket widens the language match as it waits (native -> fluent -> any, with machine
-- translation); the queue remembers how far, so the dispatcher applies the same rule.
ALTER TABLE ticket_queue ADD COLUMN match text NOT NULL DEFAULT 'fluent' CHECK (match IN ('native', 'fluent', 'any'));
ALTER TABLE tickets ADD COLUMN machine_translation boolean NOT NULL DEFAULT false;
