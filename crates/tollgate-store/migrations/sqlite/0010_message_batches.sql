-- Message Batches (issue #18). A batch belongs to the workspace of the key that made it;
-- each of its requests keeps its own reservation, made when the batch was created at the
-- Batch rate and ended by the request's own settlement or void. Params and results are
-- the wire JSON as text: the store never reads them. A runner claims a pending request by
-- writing its name and a lease (`claimed_until`); a lease that lapses (a runner that died)
-- lets another runner claim it again, and the reservation's settlement, idempotent by id,
-- keeps a request run twice from being charged twice.
CREATE TABLE message_batches (
    id                  TEXT    PRIMARY KEY,
    org_id              TEXT    NOT NULL REFERENCES organizations (id),
    workspace_id        TEXT    NOT NULL,
    api_key_id          TEXT    NOT NULL,
    processing_status   TEXT    NOT NULL
        CHECK (processing_status IN ('in_progress', 'canceling', 'ended')),
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    cancel_initiated_at INTEGER,
    ended_at            INTEGER,
    archived_at         INTEGER,
    FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id)
);
CREATE INDEX message_batches_by_workspace ON message_batches (workspace_id, id);
CREATE INDEX message_batches_unended ON message_batches (expires_at) WHERE processing_status <> 'ended';

CREATE TABLE message_batch_requests (
    batch_id       TEXT    NOT NULL REFERENCES message_batches (id),
    position       INTEGER NOT NULL,
    custom_id      TEXT    NOT NULL,
    request_id     TEXT    NOT NULL UNIQUE,
    model          TEXT    NOT NULL,
    params         TEXT    NOT NULL,
    reservation_id TEXT    NOT NULL UNIQUE,
    amount_nanos   INTEGER NOT NULL CHECK (amount_nanos > 0),
    state          TEXT    NOT NULL
        CHECK (state IN ('pending', 'succeeded', 'errored', 'canceled', 'expired')),
    claimed_by     TEXT,
    claimed_until  INTEGER,
    result         TEXT,
    ended_at       INTEGER,
    PRIMARY KEY (batch_id, position),
    UNIQUE (batch_id, custom_id)
);
CREATE INDEX message_batch_requests_pending ON message_batch_requests (batch_id, position)
    WHERE state = 'pending';
