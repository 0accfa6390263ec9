//! The HTTP exchange every provider client shares: one pooled reqwest client per
//! provider, buffered replies within a total deadline, event streams with an idle timeout,
//! and the sorting of transport failures into `UpstreamError`. It knows no wire format
//! beyond "an event stream is `text/event-stream`".

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::CONTENT_TYPE;
use tokio::time::Instant;

use crate::error::{PassedHeaders, is_passed_header};
use crate::sse::parse_event_stream;
use crate::{EventStream, UpstreamError};

/// Idle connections kept per host, and how long (see `client`).
const MAX_IDLE_PER_HOST: usize = 1_024;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client that never follows redirects (a redirect would carry the provider key to
/// wherever it points; the APIs never redirect) and sends small writes at once. Idle
/// connections are kept for reuse, but at most `MAX_IDLE_PER_HOST` of them: after a burst
/// of thousands of streams, each of which opened its own, the rest close instead of holding
/// their buffers for the idle timeout.
///
/// It speaks HTTP/1.1 only, as the providers' own SDKs do. Over TLS a provider would
/// otherwise agree to HTTP/2 and carry every call on one connection, and a connection holds
/// only as many calls at once as the provider's `SETTINGS_MAX_CONCURRENT_STREAMS`: the
/// client does not open a second one, so the calls past that number would wait for a stream
/// (minutes long, for a model's answer) to end. One connection a call has no such ceiling.
///
/// `ca_pem` holds certificates trusted beside the built-in roots (an upstream behind a
/// private certificate authority).
pub(crate) fn client(
    connect_timeout: Duration,
    ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, UpstreamError> {
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|error| UpstreamError::Connect(format!("the CA certificates: {}", describe(&error))))?;
        if certificates.is_empty() {
            return Err(UpstreamError::Connect(
                "the CA certificates: no PEM certificate found".to_owned(),
            ));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    // With the builder's other settings fixed, the certificates are the one input that can
    // make building fail (a PEM block whose content is not a certificate): say so.
    let blame = if ca_pem.is_some() {
        "the CA certificates: "
    } else {
        ""
    };
    builder
        .build()
        .map_err(|error| UpstreamError::Connect(format!("{blame}{}", describe(&error))))
}

/// Sends a request and reads the whole 2xx body, all within `request_timeout`.
pub(crate) async fn send_buffered(
    builder: reqwest::RequestBuilder,
    request_timeout: Duration,
) -> Result<Bytes, UpstreamError> {
    let exchange = async {
        let response = builder.send().await.map_err(send_error)?;
        let status = response.status();
        let headers = passed_headers(&response);
        let body = response.bytes().await.map_err(body_error)?;
        if !status.is_success() {
            return Err(status_error(status, body, headers));
        }
        Ok(body)
    };
    tokio::time::timeout(request_timeout, exchange)
        .await
        .map_err(|_| UpstreamError::Timeout(format!("no complete reply within {request_timeout:?}")))?
}

/// Sends a request whose 2xx answer is an event stream, returned as soon as its headers
/// arrive (within `request_timeout`); afterwards only `idle_timeout` between chunks applies.
pub(crate) async fn send_streaming(
    builder: reqwest::RequestBuilder,
    request_timeout: Duration,
    idle_timeout: Duration,
) -> Result<EventStream, UpstreamError> {
    let chunks = send_for_chunks(builder, request_timeout, idle_timeout, "text/event-stream").await?;
    Ok(Box::pin(parse_event_stream(chunks)))
}

/// Sends a request whose 2xx answer is a stream of `content_type` (compared without
/// parameters) and hands back its bytes as they arrive, with the same deadlines as
/// `send_streaming`.
pub(crate) async fn send_for_chunks(
    builder: reqwest::RequestBuilder,
    request_timeout: Duration,
    idle_timeout: Duration,
    content_type: &str,
) -> Result<impl Stream<Item = Result<Bytes, UpstreamError>> + Send + 'static, UpstreamError> {
    let deadline = Instant::now() + request_timeout;
    let headers_timeout =
        || UpstreamError::Timeout(format!("no response headers within {request_timeout:?}"));
    let response = tokio::time::timeout_at(deadline, builder.send())
        .await
        .map_err(|_| headers_timeout())?
        .map_err(send_error)?;
    let status = response.status();
    if !status.is_success() {
        let headers = passed_headers(&response);
        let body = tokio::time::timeout_at(deadline, response.bytes())
            .await
            .map_err(|_| headers_timeout())?
            .map_err(body_error)?;
        return Err(status_error(status, body, headers));
    }
    let is_expected = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().to_ascii_lowercase().starts_with(content_type));
    if !is_expected {
        return Err(UpstreamError::Protocol(format!(
            "streaming request answered {status} without {content_type} (content-type {:?})",
            response.headers().get(CONTENT_TYPE)
        )));
    }
    Ok(with_idle_timeout(response.bytes_stream(), idle_timeout))
}

fn status_error(status: reqwest::StatusCode, body: Bytes, headers: PassedHeaders) -> UpstreamError {
    tracing::debug!(status = status.as_u16(), "upstream answered with an error status");
    UpstreamError::Status {
        status: status.as_u16(),
        body,
        headers,
    }
}

/// The headers of a failed answer that go back to the client (`is_passed_header`).
fn passed_headers(response: &reqwest::Response) -> PassedHeaders {
    response
        .headers()
        .iter()
        .filter(|(name, _)| is_passed_header(name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect()
}

/// Failures before any response: timeouts (connect included) or the connection itself.
fn send_error(error: reqwest::Error) -> UpstreamError {
    if error.is_timeout() {
        UpstreamError::Timeout(describe(&error))
    } else {
        UpstreamError::Connect(describe(&error))
    }
}

/// Failures while reading a body that had started: the reply is cut, not refused.
fn body_error(error: reqwest::Error) -> UpstreamError {
    if error.is_timeout() {
        UpstreamError::Timeout(describe(&error))
    } else {
        UpstreamError::Protocol(format!("reading the upstream body: {}", describe(&error)))
    }
}

/// reqwest's message plus its causes, which hold the useful part ("connection refused").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Ends the stream with `Timeout` when no chunk arrives for `idle_timeout`, and maps
/// transport errors. The first error ends the stream.
fn with_idle_timeout(
    chunks: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    idle_timeout: Duration,
) -> impl Stream<Item = Result<Bytes, UpstreamError>> + Send + 'static {
    let state = (Box::pin(chunks), false);
    futures_util::stream::unfold(state, move |(mut chunks, ended)| async move {
        if ended {
            return None;
        }
        match tokio::time::timeout(idle_timeout, chunks.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), (chunks, false))),
            Ok(Some(Err(error))) => Some((Err(body_error(error)), (chunks, true))),
            Ok(None) => None,
            Err(_) => Some((
                Err(UpstreamError::Timeout(format!(
                    "no stream data for {idle_timeout:?}"
                ))),
                (chunks, true),
            )),
        }
    })
}

/// A header value the provider needs; one that cannot be sent makes the client unusable.
pub(crate) fn secret_header(value: &str, what: &str) -> Result<reqwest::header::HeaderValue, UpstreamError> {
    let mut header = reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| UpstreamError::Connect(format!("{what} is not a valid header value")))?;
    // Keeps the key out of reqwest's debug output and HTTP/2 header tables.
    header.set_sensitive(true);
    Ok(header)
}

/// `{base}{path}`, with the base's trailing `/` dropped.
pub(crate) fn endpoint(base_url: &str, path: &str) -> Result<reqwest::Url, UpstreamError> {
    let base = base_url.trim_end_matches('/');
    reqwest::Url::parse(&format!("{base}{path}"))
        .map_err(|error| UpstreamError::Connect(format!("invalid upstream base URL {base:?}: {error}")))
}
