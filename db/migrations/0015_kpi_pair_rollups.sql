-- The daily KPI rollups now also keep each pair of region, module, language and priority
-- (db/kpis.py, ROLLUP_GROUPINGS). Forget what was built: queries read those days from
-- ticket_facts until the housekeeping schedule's refresh builds them again, a few months a run.
TRUNCATE kpi_daily, kpi_days, kpi_pending, kpi_held_facts, kpi_held_legs, kpi_held_periods;
