-- Message Batches on a provider's own Batches API (issue #18). A request whose model routes
-- first to an `anthropic` provider that takes batches is marked with that provider when
-- its batch is created (`upstream_provider`); the local runner never claims it. The
-- requests of one batch marked with one provider go to that provider as one provider
-- batch, whose id is written on each of them once the provider accepted it
-- (`upstream_batch_id`), under the claim of the runner that submitted it: a runner that
-- takes the requests over after a restart polls that provider batch and never submits
-- them again. The headers the batch was created with go upstream with it. No money lives
-- here: each request still ends on its own reservation.
ALTER TABLE message_batches ADD COLUMN anthropic_version TEXT;
ALTER TABLE message_batches ADD COLUMN anthropic_beta TEXT;
ALTER TABLE message_batch_requests ADD COLUMN upstream_provider TEXT;
ALTER TABLE message_batch_requests ADD COLUMN upstream_batch_id TEXT;
CREATE INDEX message_batch_requests_upstream ON message_batch_requests (batch_id, upstream_provider)
    WHERE state = 'pending' AND upstream_provider IS NOT NULL;
