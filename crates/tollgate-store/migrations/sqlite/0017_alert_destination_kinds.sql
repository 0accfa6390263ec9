-- Alert kinds per destination (issue #17): which alerts a destination receives, as a
-- comma-separated list of kind names (`balance_below_threshold,deployment_down`); NULL
-- receives every kind, including kinds added later. A delivery is queued only for the
-- destinations whose list names the alert's kind.
ALTER TABLE alert_destinations ADD COLUMN kinds TEXT;
