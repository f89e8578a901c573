-- SLA policies per priority and customer tier, with next-response and periodic-update targets,
-- each naming the calendar its clocks run on: 'customer' (the customer's contract calendar) or
-- a calendar id. Customers get a contract calendar; none means every minute counts.
ALTER TABLE customers ADD COLUMN calendar_id text REFERENCES calendars (id);

ALTER TABLE sla_policies ADD COLUMN tier text NOT NULL DEFAULT 'standard'
    CHECK (tier IN ('enterprise', 'business', 'standard'));
ALTER TABLE sla_policies ADD COLUMN next_response_minutes integer CHECK (next_response_minutes > 0);
ALTER TABLE sla_policies ADD COLUMN periodic_update_minutes integer CHECK (periodic_update_minutes > 0);
ALTER TABLE sla_policies ADD COLUMN calendar text NOT NULL DEFAULT 'customer';
ALTER TABLE sla_policies DROP CONSTRAINT sla_policies_pkey;
INSERT INTO sla_policies (priority, tier, first_response_minutes, resolution_minutes)
    SELECT priority, tier.name, first_response_minutes, resolution_minutes
    FROM sla_policies, (VALUES ('enterprise'), ('business')) AS tier (name)
    WHERE sla_policies.tier = 'standard';
ALTER TABLE sla_policies ADD PRIMARY KEY (priority, tier);
-- Premium support runs around the clock; the others on the customer's business hours.
UPDATE sla_policies SET calendar = 'always' WHERE tier = 'enterprise';
UPDATE sla_policies SET next_response_minutes = first_response_minutes * 2,
                        periodic_update_minutes = CASE priority WHEN 'P1' THEN 60 WHEN 'P2' THEN 240 END;
