-- Per-user monthly spend limits (issue #19): a workspace may cap what each of its users
-- spends in it a calendar month, so that one person's runaway agent stops and the team's
-- work does not. The limit is a workspace setting (`user_spend_limit_nanos`, only ever
-- lower than what binds the workspace; the service checks), enforced like the other
-- spend limits against running counters.
ALTER TABLE workspaces ADD COLUMN user_spend_limit_nanos BIGINT CHECK (user_spend_limit_nanos > 0);

-- The user whose personal key made the reservation, so that its end moves that user's
-- counter; NULL for workspace and service-account keys, which no per-user limit binds.
-- Reservations made before this migration have none.
ALTER TABLE reservations ADD COLUMN user_id TEXT;

-- Spend per user per workspace per calendar month (UTC), the month a reservation was made
-- in, as `spend_counters` is per workspace: `held` is what the user's open reservations
-- reserve, `settled` what the ended ones charged. Checked by the audit against the
-- reservations. No foreign key to `users`: the counter keeps naming a removed user.
CREATE TABLE user_spend_counters (
    org_id        TEXT    NOT NULL REFERENCES organizations (id),
    workspace_id  TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    -- tollgate-core's `month_key`: year * 100 + month, e.g. 202611.
    month         BIGINT  NOT NULL CHECK (month % 100 BETWEEN 1 AND 12),
    settled_nanos BIGINT  NOT NULL DEFAULT 0 CHECK (settled_nanos >= 0),
    held_nanos    BIGINT  NOT NULL DEFAULT 0 CHECK (held_nanos >= 0),
    PRIMARY KEY (org_id, workspace_id, user_id, month),
    FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id)
);
