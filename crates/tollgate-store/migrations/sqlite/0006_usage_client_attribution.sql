-- Attribution of a request by its client (issue #23): Claude Code's session id, and the
-- agent and parent agent ids a subagent's requests carry. Bounded labels (at most 128
-- bytes of printable ASCII, `tollgate_core::attribution`), NULL when not sent. Reports by
-- session read the records themselves, so the hourly rollup keeps its key, and no index
-- is added: a report reads a window of records by (org_id, ended_at) as minute reports do,
-- and the settlement's insert stays as cheap as it was.
ALTER TABLE usage_records ADD COLUMN client_session_id TEXT;
ALTER TABLE usage_records ADD COLUMN client_agent_id TEXT;
ALTER TABLE usage_records ADD COLUMN client_parent_agent_id TEXT;
