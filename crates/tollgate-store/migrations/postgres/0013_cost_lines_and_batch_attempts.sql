-- Each claim on a Message Batch request counts one more attempt (issue #18): a runner's
-- fence before it settles the request's reservation, and its result, count only while its
-- attempt is still the request's, so a runner that stalled past its lease never ends or
-- charges a request another runner re-claimed. Requests claimed before read as attempt 0.
ALTER TABLE message_batch_requests ADD COLUMN attempt BIGINT NOT NULL DEFAULT 0;
