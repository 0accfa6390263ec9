-- Deactivated users (issue #19): a person kept in the organization, with their usage and
-- history, who can no longer sign in. Deactivating archives their personal keys and ends
-- their Console sessions in the same transaction; reactivating lets them sign in again
-- (their keys stay archived). A row per deactivated user; none: active.
CREATE TABLE user_deactivations (
    user_id        TEXT    PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    deactivated_at BIGINT NOT NULL
);
