-- Idempotency keys of the control plane (issue #22): a mutating Admin API or Console billing
-- request sent with an `Idempotency-Key` header claims (organization, key) before it runs.
-- The request is identified by its method, path and the SHA-256 of its body (hex); `state`
-- is `in_flight` until its answer (status, content type, location, body) is kept, then
-- `done`, and the same request again gets that answer back. A 5xx answer deletes the row,
-- so the client may retry. A row expires 24 hours after its claim: the next claim of the
-- key takes an expired row over, and the maintenance pass deletes the rest. No money
-- lives here.
CREATE TABLE idempotency_keys (
    org_id                TEXT    NOT NULL REFERENCES organizations (id),
    idempotency_key       TEXT    NOT NULL,
    method                TEXT    NOT NULL,
    path                  TEXT    NOT NULL,
    body_sha256           TEXT    NOT NULL,
    state                 TEXT    NOT NULL CHECK (state IN ('in_flight', 'done')),
    response_status       INTEGER,
    response_content_type TEXT,
    response_location     TEXT,
    response_body         TEXT,
    created_at            INTEGER NOT NULL,
    expires_at            INTEGER NOT NULL,
    PRIMARY KEY (org_id, idempotency_key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
