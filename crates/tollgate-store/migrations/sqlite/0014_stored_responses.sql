-- Stored responses of the Responses API (issue #20): a response made with `store` (the
-- default) is kept for its workspace until `expires_at`, so a later request may continue it
-- by `previous_response_id` and GET or DELETE it. `input_items` is the whole conversation
-- the response answered (earlier turns included), `response` the Response object: wire JSON
-- as text, which the store never reads. No money lives here.
CREATE TABLE stored_responses (
    id           TEXT    PRIMARY KEY,
    org_id       TEXT    NOT NULL REFERENCES organizations (id),
    workspace_id TEXT    NOT NULL,
    api_key_id   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    input_items  TEXT    NOT NULL,
    response     TEXT    NOT NULL,
    FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id)
);
CREATE INDEX stored_responses_by_expiry ON stored_responses (expires_at);
