-- Personal keys and allowed models (issue #19).
--
-- `user_id`: the user a personal key is bound to; NULL for a workspace key. No foreign
-- key: removing the user archives their personal keys in the same transaction, and the key
-- keeps naming its former owner for the history.
-- `allowed_models`: the catalogue ids or aliases the key may call, comma-separated; NULL
-- for every model.
ALTER TABLE api_keys ADD COLUMN user_id TEXT;
ALTER TABLE api_keys ADD COLUMN allowed_models TEXT;
CREATE INDEX api_keys_by_user ON api_keys (user_id) WHERE user_id IS NOT NULL;
