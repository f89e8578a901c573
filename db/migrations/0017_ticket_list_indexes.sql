-- GET /v1/tickets filtered by status or assignee, in list order (priority then age). Without these
-- the list walked tickets_priority_age and skipped every row of another status: at 1M tickets an
-- open queue took 90-290 ms and one agent's tickets up to 310 ms (docs/performance.md, bench read).
CREATE INDEX tickets_status_priority_age ON tickets (status, coalesce(priority, 'P9'), created_at, id);
CREATE INDEX tickets_assignee_priority_age ON tickets (assignee_id, coalesce(priority, 'P9'), created_at, id)
    WHERE assignee_id IS NOT NULL;
