//! The HTTP server: accepts connections and serves the router on each, HTTP/1.1 or HTTP/2
//! with prior knowledge, until shutdown; then it stops accepting and lets the connections
//! in flight finish their requests.
//!
//! It exists instead of `axum::serve` for memory per connection, which 10,000 open streams
//! multiply. `axum::serve` tells the protocols apart by reading the first 24 bytes of every
//! connection (hyper-util's `auto` builder) and handing them back to hyper, whose HTTP/1
//! reader then grows its 8 KiB read buffer to 16 KiB to take the rest of the request after
//! them. Here the first bytes are peeked, not read: an HTTP/1.1 connection goes straight to
//! hyper's HTTP/1 server with nothing to hand back, and only a connection that opens like
//! HTTP/2's preface goes through the `auto` builder.
//!
//! It also bounds what a client can hold without sending requests ([`ServerSettings`]): at
//! most `max_connections` connections at once (beyond that it stops accepting, and the
//! kernel's backlog holds newcomers until a connection closes); a request head must arrive
//! within the header-read timeout (hyper's own, which it starts whenever it waits for a
//! head, so it also ends an HTTP/1.1 connection idle between requests); a connection with
//! no request in flight is closed after the idle timeout (what bounds idle HTTP/2
//! connections); request heads larger than `max_header_bytes` are answered 431 in the
//! API's error envelope. A request in flight, such as a stream that runs for many minutes,
//! is never cut by these timeouts. Running out of file descriptors makes it wait briefly
//! before accepting again, and say so once per interval, not once per attempt.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tollgate_core::ids::IdKind;
use tollgate_gateway::{ApiError, ErrorKind, Surface};
use tollgate_service::{Clock, SystemClock};
use tower::ServiceExt;

/// What every HTTP/2 connection opens with (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long accepting pauses after failing for a lack of file descriptors: long enough not
/// to spin, short enough that service resumes as soon as connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one log line per this interval for a condition that repeats (accept failures,
/// the connection cap reached); the line says how many were not logged.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How far beyond `max_header_bytes` hyper itself reads a request head before it answers
/// 431 with an empty body and closes; between the two the answer is the API's envelope.
const HYPER_HEADER_SLACK: usize = 4;

/// Limits on what connections may hold; `[server]` in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// A request head (the first, or the next on a kept-alive connection) must be complete
    /// within this long.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; beyond them the server stops accepting.
    pub max_connections: usize,
    /// Largest request head (request line and header fields) answered; larger ones get 431.
    pub max_header_bytes: usize,
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for the open
/// connections to finish the requests they have begun.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    warn_if_over_file_limit(settings.max_connections);
    let graceful = GracefulShutdown::new();
    // Tells connections that have not sent a byte yet to close: the graceful shutdown only
    // reaches a connection once hyper serves it, and waits for every connection it watches.
    let (stop, stopping) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let mut cap_reached = RepeatedLog::new(REPEAT_LOG_INTERVAL);
    let mut accept_errors = RepeatedLog::new(REPEAT_LOG_INTERVAL);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = match connections.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(unlogged) = cap_reached.occurred(Instant::now()) {
                    tracing::warn!(
                        max_connections = settings.max_connections,
                        unlogged,
                        "the connection cap is reached: not accepting until a connection closes"
                    );
                }
                tokio::select! {
                    permit = connections.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = shutdown.as_mut() => break,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error, &mut accept_errors).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let router = router.clone();
        let watcher = graceful.watcher();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            // Held for the connection's life: its slot under `max_connections`.
            let _permit = permit;
            if let Err(error) = serve_connection(tcp, peer, router, settings, watcher, stopping).await {
                tracing::trace!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    graceful.shutdown().await;
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    settings: ServerSettings,
    watcher: hyper_util::server::graceful::Watcher,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Events of a stream are small writes spaced out in time: Nagle's algorithm would hold
    // each back until the previous one is acknowledged. Failing to set it only costs speed.
    let _ = tcp.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let busy = Busy::start(&activity);
            let router = router.clone();
            async move {
                if let Some(refusal) = head_too_large(&request, settings.max_header_bytes) {
                    return Ok::<_, std::convert::Infallible>(refusal);
                }
                request.extensions_mut().insert(ConnectInfo(peer));
                let response = router.oneshot(request).await?;
                // The request stays in flight until its body is sent or dropped.
                Ok(response.map(|body| Body::new(Tracked { body, _busy: busy })))
            }
        })
    };
    let mut first = [0_u8; HTTP2_PREFACE.len()];
    let peeked = tokio::select! {
        peeked = tokio::time::timeout(settings.header_read_timeout, tcp.peek(&mut first)) => match peeked {
            Ok(peeked) => peeked?,
            // Nothing within the header-read timeout.
            Err(_) => return Ok(()),
        },
        _ = stopping.wait_for(|stop| *stop) => return Ok(()),
    };
    if peeked == 0 {
        return Ok(());
    }
    let io = TokioIo::new(tcp);
    let head_limit = settings
        .max_header_bytes
        .saturating_mul(HYPER_HEADER_SLACK)
        .max(64 * 1024);
    let served = async {
        if first[..peeked] == HTTP2_PREFACE[..peeked] {
            // HTTP/2, or too few bytes yet to tell: the `auto` builder reads until it knows.
            // Its HTTP/1 side has no head-size bound of its own; the read buffer's is one.
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_read_timeout)
                .max_buf_size(head_limit);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(head_limit).unwrap_or(u32::MAX));
            watcher
                .watch(builder.serve_connection(io, service).into_owned())
                .await
        } else {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_read_timeout)
                .max_header_size(head_limit)
                .serve_connection(io, service);
            Ok(watcher.watch(connection).await?)
        }
    };
    tokio::select! {
        result = served => result,
        // Dropping the connection closes it: nothing is in flight on it.
        () = activity.idle(settings.header_read_timeout, settings.idle_timeout) => Ok(()),
    }
}

/// The requests in flight on one connection, and when it last had none.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` at which the last request ended; `u64::MAX` before any.
    last_ended_millis: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ended_millis: AtomicU64::new(u64::MAX),
        }
    }

    /// Completes once the connection has had no request in flight for `idle_timeout`
    /// since its last request ended, or for `first_request_timeout` since it opened when it
    /// has had none yet (so a client that never completes a first request is let go over
    /// HTTP/2 as over HTTP/1.1).
    async fn idle(&self, first_request_timeout: Duration, idle_timeout: Duration) {
        loop {
            match self.idle_deadline(first_request_timeout, idle_timeout) {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => tokio::time::sleep(idle_timeout).await,
            }
        }
    }

    /// When the connection counts as idle if nothing starts before; `None` while a
    /// request is in flight.
    fn idle_deadline(&self, first_request_timeout: Duration, idle_timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(match self.last_ended_millis.load(Ordering::Acquire) {
            u64::MAX => self.opened + first_request_timeout,
            millis => self.opened + Duration::from_millis(millis) + idle_timeout,
        })
    }
}

/// One request in flight on a connection, from its head to the end of its response body.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let millis = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.last_ended_millis.store(millis, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The size of a request's head as sent in HTTP/1.1: request line and header fields.
fn head_bytes<B>(request: &Request<B>) -> usize {
    let request_line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |path| path.as_str().len())
        + " HTTP/1.1\r\n".len()
        + 1;
    request
        .headers()
        .iter()
        .fold(request_line, |total, (name, value)| {
            total + name.as_str().len() + value.len() + ": \r\n".len()
        })
}

/// 431 in the envelope of the request's surface when its head exceeds `max_header_bytes`.
fn head_too_large<B>(request: &Request<B>, max_header_bytes: usize) -> Option<Response<Body>> {
    if head_bytes(request) <= max_header_bytes {
        return None;
    }
    let error = ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ErrorKind::InvalidRequest,
        format!("Request headers are too large: at most {max_header_bytes} bytes are accepted."),
    );
    let request_id = tollgate_service::random::ordered_id(IdKind::Request, SystemClock.now());
    let surface = Surface::of(request.uri().path(), request.headers());
    let body = match surface {
        Surface::Anthropic => error.to_json(&request_id),
        Surface::OpenAi => error.to_openai_json(),
    };
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        if surface == Surface::OpenAi {
            headers.insert("x-request-id", value.clone());
        }
        headers.insert("request-id", value);
    }
    Some(response)
}

/// Accepting fails for a connection reset before it was accepted (nothing to do) or for a
/// lack of file descriptors (`EMFILE`, `ENFILE`) or memory: waiting lets open connections
/// close instead of spinning, and the log says so once per interval.
async fn accept_failed(error: &std::io::Error, log: &mut RepeatedLog) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    if let Some(unlogged) = log.occurred(Instant::now()) {
        tracing::error!(
            %error,
            unlogged,
            "cannot accept a connection; pausing {} ms before each retry",
            ACCEPT_BACKOFF.as_millis()
        );
    }
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// Says at start when `max_connections` cannot be reached before the process runs out of
/// file descriptors: each connection takes one, and each request it makes upstream another.
fn warn_if_over_file_limit(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    if let Some(open_files) = open_files_limit(&limits)
        && max_connections
            .saturating_mul(2)
            .saturating_add(FILES_BESIDE_CONNECTIONS)
            > open_files
    {
        tracing::warn!(
            max_connections,
            open_files,
            "server.max_connections is more than the open-file limit allows (two descriptors per \
             streaming connection, one for it and one upstream): raise `ulimit -n` or lower it, \
             or accepting will fail with 'too many open files' before the cap is reached"
        );
    }
}

/// Descriptors the process needs besides connections: the listener, the database, logs.
const FILES_BESIDE_CONNECTIONS: usize = 64;

/// The soft "Max open files" limit from the text of `/proc/self/limits`.
fn open_files_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Decides which occurrences of a repeating condition are logged: the first, then at most
/// one per interval, each with the number left unlogged since the previous one.
#[derive(Debug)]
struct RepeatedLog {
    interval: Duration,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl RepeatedLog {
    fn new(interval: Duration) -> RepeatedLog {
        RepeatedLog {
            interval,
            last_logged: None,
            unlogged: 0,
        }
    }

    /// The condition occurred at `now`: `Some(unlogged)` if this occurrence is to be
    /// logged, with how many were not since the last one that was.
    fn occurred(&mut self, now: Instant) -> Option<u64> {
        match self.last_logged {
            Some(last) if now < last + self.interval => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last_logged = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

#[cfg(test)]
mod tests;
