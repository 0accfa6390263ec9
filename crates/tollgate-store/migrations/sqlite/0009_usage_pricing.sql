-- What a request's price applied (issue #18): the model the upstream said served it when
-- another than the one routed (a server-side fallback, billed at its prices), the speed
-- the upstream reported (`usage.speed`), the multipliers its cost applied (`batch`,
-- `fast`, `geo`, joined by commas; empty for none) and the web searches it ran
-- (`usage.server_tool_use.web_search_requests`). Records written before read as routed,
-- standard and without web searches.
ALTER TABLE usage_records ADD COLUMN served_model TEXT;
ALTER TABLE usage_records ADD COLUMN speed TEXT;
ALTER TABLE usage_records ADD COLUMN multipliers TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_records ADD COLUMN web_search_requests INTEGER NOT NULL DEFAULT 0;
