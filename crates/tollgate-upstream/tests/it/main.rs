//! The Anthropic and OpenAI clients against a tiny local axum server: success, status
//! pass-through, streaming, timeouts, connect failures, and what is sent upstream; `tls`:
//! the same over TLS, to a server that offers HTTP/2.

mod tls;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::routing::post;
use bytes::Bytes;
use futures_util::StreamExt;
use tollgate_core::usage::TokenUsage;
use tollgate_upstream::anthropic::{AnthropicClient, AnthropicConfig};
use tollgate_upstream::openai::{ChatUsageAccumulator, OpenAiClient, OpenAiConfig};
use tollgate_upstream::sse::{SseEvent, UsageAccumulator};
use tollgate_upstream::{Provider, UpstreamError, UpstreamReply, UpstreamRequest};

const MESSAGE_BODY: &str = r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":30,"cache_read_input_tokens":40,"cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":20},"output_tokens":6}}"#;

const STREAM_BODY: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

/// Serves `router` on an ephemeral port and returns its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

fn client(base_url: &str) -> Provider {
    let config = AnthropicConfig {
        base_url: base_url.to_owned(),
        api_key: Some("sk-ant-upstream".to_owned()),
        ca_pem: None,
        connect_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(150),
        request_timeout: Duration::from_millis(400),
    };
    Provider::Anthropic(AnthropicClient::new(config).expect("a valid config"))
}

fn request(stream: bool) -> UpstreamRequest {
    UpstreamRequest {
        body: Bytes::from_static(
            br#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#,
        ),
        stream,
        anthropic_version: None,
        anthropic_beta: None,
        client_headers: Default::default(),
        query: None,
    }
}

fn event_stream_response(body: Body) -> axum::response::Response {
    axum::response::Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .body(body)
        .expect("a response")
}

async fn collect(reply: Result<UpstreamReply, UpstreamError>) -> Vec<Result<SseEvent, UpstreamError>> {
    match reply {
        Ok(UpstreamReply::Stream(events)) => events.collect().await,
        other => panic!("expected a stream, got {other:?}"),
    }
}

#[tokio::test]
async fn non_streaming_reply_is_passed_through_with_its_usage() {
    let router = Router::new().route(
        "/v1/messages",
        post(|| async { ([(header::CONTENT_TYPE, "application/json")], MESSAGE_BODY) }),
    );
    let provider = client(&serve(router).await);
    let Ok(UpstreamReply::Message { body, usage }) = provider.call(request(false)).await else {
        panic!("expected a message");
    };
    assert_eq!(body, MESSAGE_BODY.as_bytes());
    let expected = TokenUsage {
        input_tokens: 12,
        output_tokens: 6,
        cache_creation_5m_input_tokens: 10,
        cache_creation_1h_input_tokens: 20,
        cache_read_input_tokens: 40,
        ..TokenUsage::default()
    };
    assert_eq!(usage, expected);
}

#[tokio::test]
async fn overloaded_status_is_passed_through_and_retryable() {
    const OVERLOADED: &str = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let router = Router::new().route(
        "/v1/messages",
        post(|| async {
            (
                StatusCode::from_u16(529).expect("a status"),
                [(header::CONTENT_TYPE, "application/json")],
                OVERLOADED,
            )
        }),
    );
    let provider = client(&serve(router).await);
    for stream in [false, true] {
        let Err(error) = provider.call(request(stream)).await else {
            panic!("expected an error");
        };
        assert!(error.is_retryable());
        let UpstreamError::Status { status, body, .. } = error else {
            panic!("expected a status, got {error:?}");
        };
        assert_eq!((status, body), (529, Bytes::from_static(OVERLOADED.as_bytes())));
    }
}

#[tokio::test]
async fn streaming_reply_yields_events_across_odd_chunk_boundaries() {
    let router = Router::new().route(
        "/v1/messages",
        post(|| async {
            // Chunks of 7 bytes split lines, field names and JSON everywhere.
            let chunks: Vec<Result<Bytes, Infallible>> = STREAM_BODY
                .as_bytes()
                .chunks(7)
                .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
                .collect();
            event_stream_response(Body::from_stream(futures_util::stream::iter(chunks)))
        }),
    );
    let provider = client(&serve(router).await);
    let events: Vec<SseEvent> = collect(provider.call(request(true)).await)
        .await
        .into_iter()
        .map(|event| event.expect("no error"))
        .collect();
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let reencoded: Vec<u8> = events
        .iter()
        .flat_map(|event| event.to_bytes().to_vec())
        .collect();
    assert_eq!(reencoded, STREAM_BODY.as_bytes());
    let mut accumulator = UsageAccumulator::default();
    events.iter().for_each(|event| accumulator.observe(event));
    assert_eq!(
        (
            accumulator.usage().input_tokens,
            accumulator.usage().output_tokens
        ),
        (25, 15)
    );
    assert!(accumulator.saw_message_stop());
}

#[tokio::test]
async fn a_stalled_stream_ends_with_an_idle_timeout() {
    let router = Router::new().route(
        "/v1/messages",
        post(|| async {
            let first = futures_util::stream::iter([Ok::<_, Infallible>(Bytes::from_static(
                b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
            ))]);
            event_stream_response(Body::from_stream(first.chain(futures_util::stream::pending())))
        }),
    );
    let provider = client(&serve(router).await);
    let started = tokio::time::Instant::now();
    let items = collect(provider.call(request(true)).await).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(
        items[0].as_ref().map(|event| event.event.as_str()).ok(),
        Some("ping")
    );
    assert!(matches!(items[1], Err(UpstreamError::Timeout(_))), "{items:?}");
    // The idle timeout (150 ms) fired, not the request timeout (400 ms), which streams ignore.
    assert!(started.elapsed() < Duration::from_millis(390));
}

#[tokio::test]
async fn a_slow_non_streaming_reply_hits_the_request_timeout() {
    let router = Router::new().route(
        "/v1/messages",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            MESSAGE_BODY
        }),
    );
    let provider = client(&serve(router).await);
    let error = provider.call(request(false)).await.expect_err("times out");
    assert!(matches!(error, UpstreamError::Timeout(_)), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_closed_port_is_a_retryable_connect_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let provider = client(&format!("http://{address}"));
    let error = provider.call(request(false)).await.expect_err("refused");
    assert!(matches!(error, UpstreamError::Connect(_)), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_streaming_request_answered_without_sse_is_a_protocol_error() {
    let router = Router::new().route(
        "/v1/messages",
        post(|| async { ([(header::CONTENT_TYPE, "application/json")], MESSAGE_BODY) }),
    );
    let provider = client(&serve(router).await);
    let error = provider.call(request(true)).await.expect_err("not SSE");
    assert!(matches!(error, UpstreamError::Protocol(_)), "{error:?}");
    assert!(!error.is_retryable());
}

#[derive(Debug)]
struct Seen {
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

#[tokio::test]
async fn headers_query_and_body_are_passed_through() {
    // Goal: the provider key replaces the client's, the client's version and beta flags and
    // query string are forwarded, and the body arrives byte for byte.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = |seen: Arc<Mutex<Vec<Seen>>>, reply: &'static str| {
        move |uri: Uri, headers: HeaderMap, body: Bytes| async move {
            seen.lock().expect("lock").push(Seen {
                path: uri.path().to_owned(),
                query: uri.query().map(str::to_owned),
                headers,
                body,
            });
            ([(header::CONTENT_TYPE, "application/json")], reply)
        }
    };
    let router = Router::new()
        .route("/prefix/v1/messages", post(record(seen.clone(), MESSAGE_BODY)))
        .route(
            "/prefix/v1/messages/count_tokens",
            post(record(seen.clone(), r#"{"input_tokens":42}"#)),
        );
    // A path prefix and a trailing slash, as a config might give.
    let provider = client(&format!("{}/prefix/", serve(router).await));

    let forwarded = UpstreamRequest {
        anthropic_version: Some("2023-06-01".to_owned()),
        anthropic_beta: Some("prompt-caching-2024-07-31,interleaved-thinking-2025-05-14".to_owned()),
        client_headers: Default::default(),
        query: Some("beta=true".to_owned()),
        ..request(false)
    };
    provider.call(forwarded.clone()).await.expect("a message");
    provider.call(request(false)).await.expect("a message");
    let input_tokens = provider.count_tokens(forwarded.clone()).await.expect("a count");
    assert_eq!(input_tokens, 42);

    let seen = seen.lock().expect("lock");
    let header = |index: usize, name: &str| {
        seen[index]
            .headers
            .get(name)
            .map(|value| value.to_str().expect("ASCII").to_owned())
    };
    assert_eq!(seen[0].path, "/prefix/v1/messages");
    assert_eq!(seen[0].query.as_deref(), Some("beta=true"));
    assert_eq!(seen[0].body, forwarded.body);
    assert_eq!(header(0, "x-api-key").as_deref(), Some("sk-ant-upstream"));
    assert_eq!(header(0, "content-type").as_deref(), Some("application/json"));
    assert_eq!(header(0, "anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(
        header(0, "anthropic-beta").as_deref(),
        Some("prompt-caching-2024-07-31,interleaved-thinking-2025-05-14")
    );
    assert_eq!(seen[1].query, None);
    assert_eq!(header(1, "anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(header(1, "anthropic-beta"), None);
    assert_eq!(seen[2].path, "/prefix/v1/messages/count_tokens");
    assert_eq!(seen[2].query.as_deref(), Some("beta=true"));
}

const CHAT_BODY: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":7,"total_tokens":37,"prompt_tokens_details":{"cached_tokens":10}}}"#;

const CHAT_STREAM_BODY: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":7}}\n\n\
data: [DONE]\n\n";

fn openai_client(base_url: &str) -> Provider {
    let config = OpenAiConfig {
        base_url: base_url.to_owned(),
        api_key: Some("sk-openai-upstream".to_owned()),
        ca_pem: None,
        connect_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(150),
        request_timeout: Duration::from_millis(400),
        max_tokens_field: Default::default(),
    };
    Provider::OpenAi(OpenAiClient::new(config).expect("a valid config"))
}

fn chat_request(stream: bool) -> UpstreamRequest {
    UpstreamRequest {
        body: Bytes::from_static(br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#),
        stream,
        anthropic_version: Some("2023-06-01".to_owned()),
        anthropic_beta: None,
        client_headers: Default::default(),
        query: Some("beta=true".to_owned()),
    }
}

#[tokio::test]
async fn openai_client_posts_chat_completions_with_a_bearer_key() {
    // Goal: the body goes to {base}/chat/completions as is, with the provider key as a bearer
    // token and none of the Anthropic headers or query; usage is read from the reply.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let recorder = seen.clone();
    let router = Router::new().route(
        "/v1/chat/completions",
        post(move |uri: Uri, headers: HeaderMap, body: Bytes| async move {
            recorder.lock().expect("lock").push(Seen {
                path: uri.path().to_owned(),
                query: uri.query().map(str::to_owned),
                headers,
                body,
            });
            ([(header::CONTENT_TYPE, "application/json")], CHAT_BODY)
        }),
    );
    let provider = openai_client(&format!("{}/v1/", serve(router).await));
    assert_eq!(provider.dialect(), tollgate_upstream::Dialect::OpenAi);
    let Ok(UpstreamReply::Message { body, usage }) = provider.call(chat_request(false)).await else {
        panic!("expected a message");
    };
    assert_eq!(body, CHAT_BODY.as_bytes());
    assert_eq!(
        usage,
        TokenUsage {
            input_tokens: 20,
            output_tokens: 7,
            cache_read_input_tokens: 10,
            ..TokenUsage::default()
        }
    );
    assert!(matches!(
        provider.count_tokens(chat_request(false)).await,
        Err(UpstreamError::Protocol(_))
    ));
    let seen = seen.lock().expect("lock");
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].query, None);
    assert_eq!(seen[0].body, chat_request(false).body);
    let header = |name: &str| {
        seen[0]
            .headers
            .get(name)
            .map(|value| value.to_str().expect("ASCII"))
    };
    assert_eq!(header("authorization"), Some("Bearer sk-openai-upstream"));
    assert_eq!(header("x-api-key"), None);
    assert_eq!(header("anthropic-version"), None);
}

#[tokio::test]
async fn openai_streams_are_metered_and_failures_sorted() {
    let router = Router::new()
        .route(
            "/ok/chat/completions",
            post(|| async {
                let chunks: Vec<Result<Bytes, Infallible>> = CHAT_STREAM_BODY
                    .as_bytes()
                    .chunks(5)
                    .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
                    .collect();
                event_stream_response(Body::from_stream(futures_util::stream::iter(chunks)))
            }),
        )
        .route(
            "/busy/chat/completions",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"error":{"message":"busy","type":"server_error","param":null,"code":null}}"#,
                )
            }),
        )
        .route(
            "/bad/chat/completions",
            post(|| async { (StatusCode::BAD_REQUEST, r#"{"error":{"message":"no"}}"#) }),
        );
    let base = serve(router).await;
    let events: Vec<SseEvent> = collect(
        openai_client(&format!("{base}/ok"))
            .call(chat_request(true))
            .await,
    )
    .await
    .into_iter()
    .map(|event| event.expect("no error"))
    .collect();
    assert_eq!(events.len(), 4);
    let mut meter = ChatUsageAccumulator::default();
    events.iter().for_each(|event| meter.observe(event));
    assert!(meter.saw_done() && meter.saw_finish());
    assert_eq!(meter.reported_usage().map(|usage| usage.output_tokens), Some(7));

    let busy = openai_client(&format!("{base}/busy"))
        .call(chat_request(true))
        .await
        .expect_err("503");
    assert!(busy.fails_over(), "a 5xx is tried elsewhere");
    let bad = openai_client(&format!("{base}/bad"))
        .call(chat_request(false))
        .await
        .expect_err("400");
    assert!(
        !bad.fails_over(),
        "a 4xx is the client's and is not tried elsewhere"
    );
    let timeout = UpstreamError::Timeout("slow".to_owned());
    assert!(
        !timeout.fails_over(),
        "a timeout may still be generating upstream"
    );
}
