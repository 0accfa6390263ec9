-- The upstream calls of each request (issue #17), for the request log: one line per
-- attempt in order, the deployment (`provider/upstream model`) and, for a failed one, a tab
-- and how it failed (`overloaded (529)`). The deployment that served the request is the
-- last line when it has no error. NULL: no upstream was called (a refusal, a record
-- written before this migration).
ALTER TABLE usage_records ADD COLUMN upstream_attempts TEXT;
