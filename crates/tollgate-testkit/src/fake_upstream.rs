//! The fake Anthropic upstream: its public controls (behaviours, recorded requests, stream
//! counters) and the state shared with the request handlers.
//!
//! The request path is built to serve benchmark load, so it takes no lock unless it has to:
//! counters are atomics, the default behaviour sits behind a read lock, the queue of one-shot
//! behaviours is only locked when it is non-empty, and recording (one mutex) can be switched
//! off. Wire shapes live in `wire`, routing in `handlers`, connections in `serve`.

mod batches;
mod cloud;
mod files;
mod gemini;
mod handlers;
mod serve;
mod wire;

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use crate::fake_upstream::batches::BatchBehavior;
pub use crate::fake_upstream::cloud::{
    BENCH_VERTEX_TOKEN, CloudMode, FAKE_AWS_ACCESS_KEY_ID, FAKE_AWS_REGION, FAKE_AWS_SECRET_ACCESS_KEY,
    FAKE_GCP_PROJECT, FAKE_GCP_REGION, FakeBedrock, FakeVertex,
};
pub use crate::fake_upstream::gemini::{
    FAKE_GEMINI_API_KEY, FakeGemini, GeminiBehavior, GeminiReply, gemini_tokens_of,
};

/// A fake Anthropic API on `127.0.0.1`, serving `POST /v1/messages` (streaming or not),
/// `POST /v1/messages/count_tokens` and the Message Batches API (`batches`) — and a fake OpenAI-compatible one on the same port,
/// `POST /v1/chat/completions` and `POST /v1/embeddings`, with the same behaviours (for an
/// `openai` provider, use `base_url()` + `/v1`).
///
/// Dropping it stops accepting connections; connections already open are served to the end.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

/// Whether a [`FakeUpstream`] keeps a copy of every request it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recording {
    /// Keep every request for [`FakeUpstream::requests`] (tests).
    Enabled,
    /// Keep only the count, so the request path takes no lock (benchmarks).
    Disabled,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The path without the query, e.g. `/v1/messages`.
    pub path: String,
    /// The raw query string without `?`, e.g. `beta=true`.
    pub query: Option<String>,
    /// Every header, values of one name kept together in arrival order; names are lowercase,
    /// values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body. A body that is not JSON is kept as a JSON string holding its
    /// (lossily decoded) text, so tests can still see what was sent.
    pub body: serde_json::Value,
}

impl RecordedRequest {
    /// The request as it arrived: its path, query and headers, and its body as JSON (or as
    /// a JSON string of its text when it is not JSON).
    pub(crate) fn of(uri: &axum::http::Uri, headers: &axum::http::HeaderMap, body: &[u8]) -> RecordedRequest {
        RecordedRequest {
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: serde_json::from_slice(body)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned())),
        }
    }

    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header_name, _)| header_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What a successful answer contains and how fast it is delivered.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The assistant text, split across the stream's `content_block_delta` events.
    pub text: String,
    pub input_tokens: u64,
    /// Reported output tokens. Capped by the request's `max_tokens`, in which case the stop
    /// reason is `max_tokens` (the text itself is not shortened); otherwise `end_turn`.
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// Pause between consecutive SSE events.
    pub event_delay: Duration,
    /// Pause before the response headers are sent.
    pub latency: Duration,
    /// The `model` the reply names; `None`: the model asked for. Another id stands for a
    /// server-side fallback.
    pub served_model: Option<String>,
    /// Reported as `usage.server_tool_use.web_search_requests` when not zero.
    pub web_search_requests: u64,
    /// Reported as `usage.speed` when set (`"standard"`, `"fast"`).
    pub speed: Option<&'static str>,
    /// Reported as `usage.inference_geo` when set (`"global"`, `"us"`).
    pub inference_geo: Option<&'static str>,
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            text: "Hello from the fake upstream.".to_owned(),
            input_tokens: 10,
            output_tokens: 20,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            event_delay: Duration::ZERO,
            latency: Duration::ZERO,
            served_model: None,
            web_search_requests: 0,
            speed: None,
            inference_geo: None,
        }
    }
}

/// How the fake answers a request. Variants without a [`Reply`] use `Reply::default()`.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answer normally.
    Ok(Reply),
    /// Answer with this status and an Anthropic error envelope of the matching type
    /// (400 `invalid_request_error`, 401 `authentication_error`, 402 `billing_error`,
    /// 403 `permission_error`, 404 `not_found_error`, 413 `request_too_large`,
    /// 429 `rate_limit_error`, 500 `api_error`, 504 `timeout_error`, 529 `overloaded_error`;
    /// other 4xx are `invalid_request_error`, anything else `api_error`).
    Status(u16),
    /// Answer with this status and an Anthropic error envelope of this type and wording (on
    /// `/v1/chat/completions`, OpenAI's envelope with the same message).
    Refuse {
        status: u16,
        error_type: String,
        message: String,
    },
    /// Streaming: send `message_start`, `content_block_start`, `ping` and `deltas`
    /// `content_block_delta` events, then an `error` event carrying `overloaded_error`, and
    /// end the stream. A non-streaming request gets a 529 `overloaded_error` instead.
    MidStreamError { deltas: usize },
    /// Send the headers (and for streams `message_start`, `content_block_start`, `ping` and
    /// `deltas` deltas), go silent for `duration`, then finish normally.
    Stall { deltas: usize, duration: Duration },
    /// Read the request, then close the connection without answering. Over HTTP/2 this drops
    /// every stream sharing the connection.
    Hangup,
}

impl FakeUpstream {
    /// Binds `127.0.0.1:0` with recording enabled and serves on the current tokio runtime.
    pub async fn start() -> FakeUpstream {
        FakeUpstream::bind(loopback_any_port(), Recording::Enabled)
            .await
            .expect("fake upstream: bind 127.0.0.1:0")
    }

    /// Like [`FakeUpstream::start`] but keeps no requests, for benchmarks.
    pub async fn start_unrecorded() -> FakeUpstream {
        FakeUpstream::bind(loopback_any_port(), Recording::Disabled)
            .await
            .expect("fake upstream: bind 127.0.0.1:0")
    }

    /// Binds `listen_addr` and serves on the current tokio runtime.
    pub async fn bind(listen_addr: SocketAddr, recording: Recording) -> std::io::Result<FakeUpstream> {
        let listener = TcpListener::bind(listen_addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(recording));
        let router = handlers::router(Arc::clone(&shared));
        let accept_task = tokio::spawn(serve::accept_loop(listener, router));
        Ok(FakeUpstream {
            addr,
            shared,
            accept_task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The behaviour for every following request until changed, once queued behaviours
    /// are used up. Starts as `Behavior::Ok(Reply::default())`.
    pub fn set_behavior(&self, behavior: Behavior) {
        let mut default_behavior = self
            .shared
            .default_behavior
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *default_behavior = Arc::new(behavior);
    }

    /// Queues a behaviour for exactly one request; queued behaviours are used in push order
    /// before the one set by [`FakeUpstream::set_behavior`].
    pub fn push_behavior(&self, behavior: Behavior) {
        let mut queue = lock(&self.shared.queued_behaviors);
        queue.push_back(behavior);
        self.shared.queued_count.store(queue.len(), Ordering::SeqCst);
    }

    /// How provider batches created from now on, and those held, answer.
    pub fn set_batch_behavior(&self, behavior: BatchBehavior) {
        *lock(&self.shared.batch_behavior) = behavior;
    }

    /// Every request received on `/v1/messages`, `/v1/messages/count_tokens`,
    /// `/v1/messages/batches…` and `/v1/chat/completions`, in arrival order. Always empty with [`Recording::Disabled`].
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.recorded).clone()
    }

    /// How many requests arrived on the routes, counted even without recording.
    pub fn request_count(&self) -> usize {
        self.shared.request_count.load(Ordering::SeqCst)
    }

    /// Streams whose last event (`message_stop`, or `error` for
    /// [`Behavior::MidStreamError`]) was handed to the connection.
    pub fn streams_completed(&self) -> usize {
        self.shared.streams_completed.load(Ordering::SeqCst)
    }

    /// Streams dropped before their last event because the client went away.
    pub fn streams_disconnected(&self) -> usize {
        self.shared.streams_disconnected.load(Ordering::SeqCst)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        // Tests start many instances on one runtime; stop accepting so ports and tasks don't
        // outlive the test that owned them.
        self.accept_task.abort();
    }
}

fn loopback_any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// State shared between a [`FakeUpstream`] handle and its request handlers.
#[derive(Debug)]
struct Shared {
    recording: Recording,
    default_behavior: RwLock<Arc<Behavior>>,
    queued_behaviors: Mutex<VecDeque<Behavior>>,
    /// Mirrors the queue length so the request path can skip the queue lock when it is empty.
    queued_count: AtomicUsize,
    recorded: Mutex<Vec<RecordedRequest>>,
    request_count: AtomicUsize,
    streams_completed: AtomicUsize,
    streams_disconnected: AtomicUsize,
    next_id: AtomicU64,
    batches: Mutex<Vec<batches::FakeBatch>>,
    batch_behavior: Mutex<BatchBehavior>,
}

impl Shared {
    fn new(recording: Recording) -> Shared {
        Shared {
            recording,
            default_behavior: RwLock::new(Arc::new(Behavior::Ok(Reply::default()))),
            queued_behaviors: Mutex::new(VecDeque::new()),
            queued_count: AtomicUsize::new(0),
            recorded: Mutex::new(Vec::new()),
            request_count: AtomicUsize::new(0),
            streams_completed: AtomicUsize::new(0),
            streams_disconnected: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            batches: Mutex::new(Vec::new()),
            batch_behavior: Mutex::new(BatchBehavior::default()),
        }
    }

    /// Takes the behaviour for one request: the oldest queued one, else the default.
    fn next_behavior(&self) -> Arc<Behavior> {
        if self.queued_count.load(Ordering::SeqCst) > 0 {
            let mut queue = lock(&self.queued_behaviors);
            let queued = queue.pop_front();
            self.queued_count.store(queue.len(), Ordering::SeqCst);
            if let Some(behavior) = queued {
                return Arc::new(behavior);
            }
        }
        self.default_reply()
    }

    /// The behaviour set for every request, leaving the queue alone.
    fn default_reply(&self) -> Arc<Behavior> {
        Arc::clone(
            &self
                .default_behavior
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// A number unique within this instance, used for message and request ids.
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Locks a mutex, ignoring poisoning: a test that panicked while holding it has already
/// failed, and the data (a queue or a log) is still meaningful to the others.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
