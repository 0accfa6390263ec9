-- The hourly usage rollup (0003), kept once per statement instead of once per record.
--
-- A write batch inserts all its usage records in one statement; the row-level trigger then
-- upserted the same hourly row once per record, under the organizations' locks. This one
-- reads the statement's new records as a transition table and upserts each (organization,
-- hour, workspace, key, model, context window) once, with the same sums and the same rule:
-- only succeeded requests and those whose client left count, priced at what their
-- reservation charged.

DROP TRIGGER usage_records_roll_up ON usage_records;
DROP FUNCTION usage_records_roll_up();

CREATE FUNCTION usage_records_roll_up() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_hourly AS h
        (org_id, hour, workspace_id, api_key_id, model, context_window, requests, input_tokens,
         output_tokens, cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,
         cache_read_input_tokens, cost_nanos)
    SELECT n.org_id,
           n.ended_at - n.ended_at % 3600000,
           n.workspace_id,
           COALESCE(n.api_key_id, ''),
           n.model,
           CASE WHEN n.input_tokens + n.cache_creation_5m_input_tokens
                     + n.cache_creation_1h_input_tokens + n.cache_read_input_tokens > 200000
                THEN '200k-1M' ELSE '0-200k' END,
           COUNT(*),
           SUM(n.input_tokens),
           SUM(n.output_tokens),
           SUM(n.cache_creation_5m_input_tokens),
           SUM(n.cache_creation_1h_input_tokens),
           SUM(n.cache_read_input_tokens),
           SUM(COALESCE(r.charged, 0))
    FROM inserted n LEFT JOIN reservations r ON r.id = n.reservation_id
    WHERE n.status IN ('succeeded', 'client_disconnected')
    GROUP BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (org_id, hour, workspace_id, api_key_id, model, context_window) DO UPDATE SET
        requests = h.requests + excluded.requests,
        input_tokens = h.input_tokens + excluded.input_tokens,
        output_tokens = h.output_tokens + excluded.output_tokens,
        cache_creation_5m_input_tokens = h.cache_creation_5m_input_tokens + excluded.cache_creation_5m_input_tokens,
        cache_creation_1h_input_tokens = h.cache_creation_1h_input_tokens + excluded.cache_creation_1h_input_tokens,
        cache_read_input_tokens = h.cache_read_input_tokens + excluded.cache_read_input_tokens,
        cost_nanos = h.cost_nanos + excluded.cost_nanos;
    RETURN NULL;
END;
$$;

CREATE TRIGGER usage_records_roll_up AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION usage_records_roll_up();
