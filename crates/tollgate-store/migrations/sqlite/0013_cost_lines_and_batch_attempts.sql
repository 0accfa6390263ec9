-- Each claim on a Message Batch request counts one more attempt (issue #18): a runner's
-- fence before it settles the request's reservation, and its result, count only while its
-- attempt is still the request's, so a runner that stalled past its lease never ends or
-- charges a request another runner re-claimed. Requests claimed before read as attempt 0.
ALTER TABLE message_batch_requests ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;

-- A charge by what it paid for (issue #18): each usage record keeps its cost lines, each
-- token kind at the rates its settlement applied (its prompt's tier, its multipliers, the
-- prices in force when it was admitted) and its web searches, rounded so that they add up
-- to its cost less any per-request charge (`tollgate_core::pricing::CostLines`). The
-- hourly rollup sums them, and its web searches, so that the cost report shows web search
-- as its own cost type and splits tokens without repricing anything. Records written
-- before read as zero lines, and the report splits those at the prices in force.
ALTER TABLE usage_records ADD COLUMN cost_input_nanos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN cost_output_nanos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN cost_cache_write_5m_nanos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN cost_cache_write_1h_nanos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN cost_cache_read_nanos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN cost_web_search_nanos INTEGER NOT NULL DEFAULT 0;

ALTER TABLE usage_hourly ADD COLUMN web_search_requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN cost_input_nanos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN cost_output_nanos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN cost_cache_write_5m_nanos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN cost_cache_write_1h_nanos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN cost_cache_read_nanos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN cost_web_search_nanos INTEGER NOT NULL DEFAULT 0;

-- The web searches of the records already rolled up (their lines are unknown: zero).
UPDATE usage_hourly SET web_search_requests = (
    SELECT COALESCE(SUM(u.web_search_requests), 0) FROM usage_records u
    WHERE u.org_id = usage_hourly.org_id
      AND u.ended_at - u.ended_at % 3600000 = usage_hourly.hour
      AND u.workspace_id = usage_hourly.workspace_id
      AND COALESCE(u.api_key_id, '') = usage_hourly.api_key_id
      AND u.model = usage_hourly.model
      AND CASE WHEN u.input_tokens + u.cache_creation_5m_input_tokens
                    + u.cache_creation_1h_input_tokens + u.cache_read_input_tokens > 200000
               THEN '200k-1M' ELSE '0-200k' END = usage_hourly.context_window
      AND u.status IN ('succeeded', 'client_disconnected'));

DROP TRIGGER usage_records_roll_up;

CREATE TRIGGER usage_records_roll_up AFTER INSERT ON usage_records
WHEN NEW.status IN ('succeeded', 'client_disconnected')
BEGIN
    INSERT INTO usage_hourly
        (org_id, hour, workspace_id, api_key_id, model, context_window, requests, input_tokens,
         output_tokens, cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,
         cache_read_input_tokens, cost_nanos, web_search_requests, cost_input_nanos,
         cost_output_nanos, cost_cache_write_5m_nanos, cost_cache_write_1h_nanos,
         cost_cache_read_nanos, cost_web_search_nanos)
    VALUES (
        NEW.org_id,
        NEW.ended_at - NEW.ended_at % 3600000,
        NEW.workspace_id,
        COALESCE(NEW.api_key_id, ''),
        NEW.model,
        CASE WHEN NEW.input_tokens + NEW.cache_creation_5m_input_tokens
                  + NEW.cache_creation_1h_input_tokens + NEW.cache_read_input_tokens > 200000
             THEN '200k-1M' ELSE '0-200k' END,
        1,
        NEW.input_tokens,
        NEW.output_tokens,
        NEW.cache_creation_5m_input_tokens,
        NEW.cache_creation_1h_input_tokens,
        NEW.cache_read_input_tokens,
        COALESCE((SELECT charged FROM reservations WHERE id = NEW.reservation_id), 0),
        NEW.web_search_requests,
        NEW.cost_input_nanos,
        NEW.cost_output_nanos,
        NEW.cost_cache_write_5m_nanos,
        NEW.cost_cache_write_1h_nanos,
        NEW.cost_cache_read_nanos,
        NEW.cost_web_search_nanos
    )
    ON CONFLICT (org_id, hour, workspace_id, api_key_id, model, context_window) DO UPDATE SET
        requests = requests + 1,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        cache_creation_5m_input_tokens = cache_creation_5m_input_tokens + excluded.cache_creation_5m_input_tokens,
        cache_creation_1h_input_tokens = cache_creation_1h_input_tokens + excluded.cache_creation_1h_input_tokens,
        cache_read_input_tokens = cache_read_input_tokens + excluded.cache_read_input_tokens,
        cost_nanos = cost_nanos + excluded.cost_nanos,
        web_search_requests = web_search_requests + excluded.web_search_requests,
        cost_input_nanos = cost_input_nanos + excluded.cost_input_nanos,
        cost_output_nanos = cost_output_nanos + excluded.cost_output_nanos,
        cost_cache_write_5m_nanos = cost_cache_write_5m_nanos + excluded.cost_cache_write_5m_nanos,
        cost_cache_write_1h_nanos = cost_cache_write_1h_nanos + excluded.cost_cache_write_1h_nanos,
        cost_cache_read_nanos = cost_cache_read_nanos + excluded.cost_cache_read_nanos,
        cost_web_search_nanos = cost_web_search_nanos + excluded.cost_web_search_nanos;
END;
