-- Prometheus reads how many timeline events of the kinds SREs watch there have been
-- (meridian_timeline_events, api/metrics.py) from this table instead of counting the whole
-- timeline at every scrape, which takes seconds at a million tickets. A trigger adds each event as
-- it is inserted; a retried projection inserts nothing (ON CONFLICT DO NOTHING), so nothing is
-- counted twice. The priority is the ticket's when the event was recorded.
CREATE TABLE timeline_event_counts (
    kind      text NOT NULL,
    region    text NOT NULL,
    priority  text NOT NULL,
    n         bigint NOT NULL,
    PRIMARY KEY (kind, region, priority)
);

-- The kinds are api/metrics.py's SRE_EVENTS; tests/test_metrics.py checks both lists agree.
CREATE FUNCTION count_timeline_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO timeline_event_counts (kind, region, priority, n)
    VALUES (
        NEW.kind,
        coalesce(NEW.region, 'none'),
        coalesce((SELECT priority FROM tickets WHERE id = NEW.ticket_id), 'none'),
        1
    )
    ON CONFLICT (kind, region, priority) DO UPDATE SET n = timeline_event_counts.n + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER ticket_events_counted AFTER INSERT ON ticket_events FOR EACH ROW
    WHEN (NEW.kind IN ('sla_warning', 'sla_breached', 'escalated', 'escalation_acknowledged',
                       'escalation_resolved', 'handed_off', 'handoff_acknowledged',
                       'handoff_unacknowledged', 'csat_sent', 'csat_received', 'notification_failed'))
    EXECUTE FUNCTION count_timeline_event();

INSERT INTO timeline_event_counts (kind, region, priority, n)
SELECT e.kind, coalesce(e.region, 'none'), coalesce(t.priority, 'none'), count(*)
FROM ticket_events e JOIN tickets t ON t.id = e.ticket_id
WHERE e.kind IN ('sla_warning', 'sla_breached', 'escalated', 'escalation_acknowledged',
                 'escalation_resolved', 'handed_off', 'handoff_acknowledged',
                 'handoff_unacknowledged', 'csat_sent', 'csat_received', 'notification_failed')
GROUP BY 1, 2, 3;
