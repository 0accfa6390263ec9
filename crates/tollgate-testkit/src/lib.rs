//! Test-only helpers for tollgate: [`FakeOtlp`], a collector that keeps the spans it is
//! sent, [`FakeOidc`], an OpenID Connect provider for single sign-on, [`FakeWebhook`] and [`FakeSmtp`], which receive alerts by HTTP and by SMTP, [`FakeStripe`], Stripe's API and signed webhooks (`fake_stripe`), and [`FakeUpstream`]: a real HTTP server on
//! loopback that speaks Anthropic's Messages API wire format (JSON replies, the SSE event
//! sequence, error envelopes) and can be told per instance how to misbehave, so integration
//! tests and the benchmark harness never touch api.anthropic.com; [`FakeBedrock`] and
//! [`FakeVertex`] put Amazon Bedrock's and Vertex AI's wire formats and credential checks in
//! front of one; [`FakeGemini`] speaks Google's Gemini API on its own.
//!
//! It must not be used in production or linked into a shipped binary: it answers every request
//! with canned text, checks no credentials and keeps every request it sees in memory. Because it
//! only ever runs under tests and benchmarks, `expect` is acceptable here for failures that
//! mean the test setup itself is broken (for example, a loopback port that cannot be bound).

mod fake_stripe;
mod fake_upstream;
mod oidc;
mod otlp;
mod smtp;
mod webhook;

pub use crate::fake_stripe::{
    CARD_AUTHENTICATION_REQUIRED, CARD_DECLINED, CARD_OK, CARD_PROCESSING, FakeStripe,
};
pub use crate::fake_upstream::{
    BENCH_VERTEX_TOKEN, BatchBehavior, Behavior, CloudMode, FAKE_AWS_ACCESS_KEY_ID, FAKE_AWS_REGION,
    FAKE_AWS_SECRET_ACCESS_KEY, FAKE_GCP_PROJECT, FAKE_GCP_REGION, FAKE_GEMINI_API_KEY, FakeBedrock,
    FakeGemini, FakeUpstream, FakeVertex, GeminiBehavior, GeminiReply, RecordedRequest, Recording, Reply,
    gemini_tokens_of,
};
pub use crate::oidc::{FakeOidc, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OidcPerson};
pub use crate::otlp::{FakeOtlp, ReceivedSpan};
pub use crate::smtp::{FakeSmtp, ReceivedMail, TEST_CA_PEM_PATH};
pub use crate::webhook::{FakeWebhook, ReceivedWebhook};
