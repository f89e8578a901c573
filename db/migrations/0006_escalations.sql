-- Escalation chains: ordered levels of targets and channels, chosen by priority.
ALTER TABLE agents ADD COLUMN roles text[] NOT NULL DEFAULT '{}';

CREATE TABLE escalation_policies (
    id                text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_-]{1,63}$'),
    name              text NOT NULL,
    priorities        text[] NOT NULL,
    levels            jsonb NOT NULL,
    -- Priorities that never page anyone whose local time is between quiet_start and quiet_end.
    quiet_priorities  text[] NOT NULL DEFAULT '{P3,P4}',
    quiet_start       time NOT NULL DEFAULT '22:00',
    quiet_end         time NOT NULL DEFAULT '07:00'
);

INSERT INTO escalation_policies (id, name, priorities, levels) VALUES
  ('urgent', 'P1/P2: assignee and lead at once, then manager, then SRE on-call', '{P1,P2}', '[
     {"after_minutes": 0, "targets": ["assignee", "team_lead"], "channels": ["webhook", "slack"]},
     {"after_minutes": 15, "targets": ["regional_manager"], "channels": ["email", "slack"]},
     {"after_minutes": 30, "targets": ["sre_oncall"], "channels": ["pagerduty"], "repeat": 2, "repeat_every_minutes": 15}
   ]'),
  ('standard', 'P3/P4: assignee, then the team lead', '{P3,P4}', '[
     {"after_minutes": 0, "targets": ["assignee"], "channels": ["webhook", "email"]},
     {"after_minutes": 60, "targets": ["team_lead"], "channels": ["email"]}
   ]');
