//! Tests for the Gemini translation: Messages bodies in, replies and streams out, and usage
//! read from `usageMetadata` to the token, whichever way it travels to the meter.

use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate_core::usage::TokenUsage;

use crate::UpstreamError;
use crate::gemini::reply::{Step, StreamTranslator, message};
use crate::gemini::request::to_generate_content;
use crate::gemini::{parse_usage, refusal, retry_delay_seconds};
use crate::sse::{SseEvent, UsageAccumulator};

fn translate(body: Value) -> Result<(String, Value), UpstreamError> {
    let call = to_generate_content(body.to_string().as_bytes())?;
    Ok((call.model, call.body))
}

/// The Anthropic envelope's message of a refusal made here.
fn refused_with(error: UpstreamError) -> (u16, String) {
    let UpstreamError::Status { status, body, .. } = error else {
        panic!("a refusal, not {error:?}");
    };
    let envelope: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(envelope["type"], "error");
    (
        status,
        envelope["error"]["message"]
            .as_str()
            .expect("a message")
            .to_owned(),
    )
}

fn chunk(data: Value) -> SseEvent {
    SseEvent {
        event: "message".to_owned(),
        data: data.to_string(),
    }
}

/// Every event a translator makes of `chunks`, then of the stream's end.
fn stream_events(chunks: &[Value]) -> Result<Vec<SseEvent>, UpstreamError> {
    let mut translator = StreamTranslator::new("gemini-2.5-flash".to_owned());
    let mut events = Vec::new();
    for data in chunks {
        match translator.chunk(&chunk(data.clone()))? {
            Step::Events(more) => events.extend(more),
            Step::Failed(error) => {
                events.push(error);
                return Ok(events);
            }
        }
    }
    events.extend(translator.finish()?);
    Ok(events)
}

fn data(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).expect("json")
}

#[test]
fn a_messages_body_becomes_a_generate_content_body() {
    let (model, body) = translate(json!({
        "model": "models/gemini-2.5-flash",
        "max_tokens": 512,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["END"],
        "stream": true,
        "metadata": {"user_id": "u-1"},
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "weather", "description": "Weather by city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                    "additionalProperties": false}}],
        "tool_choice": {"type": "tool", "name": "weather"},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Sunny"}]},
                {"type": "text", "text": "And tomorrow?"},
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "unknown", "is_error": true},
            ]},
        ],
    }))
    .expect("translates");
    assert_eq!(model, "gemini-2.5-flash");
    assert_eq!(
        body,
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Weather in Paris?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
                ]},
                {"role": "model", "parts": [
                    {"text": "Let me look."},
                    {"functionCall": {"id": "toolu_1", "name": "weather", "args": {"city": "Paris"}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"id": "toolu_1", "name": "weather", "response": {"result": "Sunny"}}},
                    {"text": "And tomorrow?"},
                ]},
                {"role": "model", "parts": [
                    {"functionCall": {"id": "toolu_2", "name": "weather", "args": {"city": "Paris"}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"id": "toolu_2", "name": "weather", "response": {"error": "unknown"}}},
                ]},
            ],
            "tools": [{"functionDeclarations": [{
                "name": "weather",
                "description": "Weather by city",
                "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}},
                                         "additionalProperties": false},
            }]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}},
            "generationConfig": {
                "maxOutputTokens": 512,
                "temperature": 0.5,
                "topP": 0.9,
                "topK": 40,
                "stopSequences": ["END"],
                "thinkingConfig": {"includeThoughts": true, "thinkingBudget": 1024},
            },
        })
    );
}

#[test]
fn a_json_schema_output_is_asked_as_json_of_that_schema() {
    let (_, body) = translate(json!({
        "model": "gemini-2.5-flash",
        "max_tokens": 100,
        "system": "Answer in JSON.",
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        "messages": [{"role": "user", "content": "Hi"}],
    }))
    .expect("translates");
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Answer in JSON."}]})
    );
    assert_eq!(
        body["generationConfig"],
        json!({"maxOutputTokens": 100, "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}})
    );
}

#[test]
fn what_gemini_cannot_say_is_refused_as_anthropic_refuses() {
    let base = |messages: Value, tools: Value| json!({"model": "gemini-2.5-flash", "max_tokens": 10, "messages": messages, "tools": tools});
    let cases = [
        (
            base(
                json!([{"role": "user", "content": "Hi"}]),
                json!([{"type": "web_search_20250305", "name": "web_search"}]),
            ),
            "tools.0: server tools (web_search_20250305)",
        ),
        (
            base(
                json!([{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]),
                json!([]),
            ),
            "messages.0.content.0.source: only base64 sources",
        ),
        (
            base(
                json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}]}]),
                json!([]),
            ),
            "without a matching tool_use block",
        ),
        (
            base(
                json!([{"role": "user", "content": [{"type": "container_upload", "file_id": "f"}]}]),
                json!([]),
            ),
            "blocks of type container_upload are not supported",
        ),
        (json!({"max_tokens": 10, "messages": []}), "model: Field required"),
    ];
    for (body, expected) in cases {
        let (status, message) = refused_with(translate(body.clone()).expect_err("refused"));
        assert_eq!(status, 400, "{body}");
        assert!(message.contains(expected), "{message} for {body}");
    }
}

#[test]
fn a_reply_becomes_a_message_with_its_usage() {
    let reply = json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Thinking it over.", "thought": true},
                {"text": "It is "},
                {"text": "sunny.", "thoughtSignature": "c2ln"},
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
            ]},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": {
            "promptTokenCount": 1_200,
            "cachedContentTokenCount": 1_000,
            "candidatesTokenCount": 40,
            "thoughtsTokenCount": 60,
            "totalTokenCount": 1_300,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc/DEF=",
    });
    let (message, usage) = message(&reply, "gemini-2.5-flash").expect("a message");
    assert_eq!(
        message,
        json!({
            "id": "msg_abc_DEF_",
            "type": "message",
            "role": "assistant",
            "model": "gemini-2.5-flash",
            "content": [
                {"type": "thinking", "thinking": "Thinking it over.", "signature": ""},
                {"type": "text", "text": "It is sunny."},
                {"type": "tool_use", "id": "toolu_abc_DEF__0", "name": "weather", "input": {"city": "Paris"}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {"input_tokens": 200, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1_000, "output_tokens": 100},
        })
    );
    assert_eq!(
        usage,
        TokenUsage {
            input_tokens: 200,
            output_tokens: 100,
            cache_read_input_tokens: 1_000,
            ..TokenUsage::default()
        }
    );
    assert_eq!(
        crate::sse::parse_usage(&message["usage"]),
        usage,
        "the body says what is billed"
    );
}

#[test]
fn finish_reasons_become_stop_reasons() {
    let usage = json!({"promptTokenCount": 3, "candidatesTokenCount": 1});
    let cases = [
        (
            json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "MAX_TOKENS"}]}),
            "max_tokens",
        ),
        (
            json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "SAFETY"}]}),
            "refusal",
        ),
        (
            json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"}]}),
            "end_turn",
        ),
        (json!({"promptFeedback": {"blockReason": "SAFETY"}}), "refusal"),
    ];
    for (mut reply, expected) in cases {
        reply["usageMetadata"] = usage.clone();
        let (message, _) = message(&reply, "m").expect("a message");
        assert_eq!(message["stop_reason"], expected, "{reply}");
    }
    let error = message(&json!({"candidates": []}), "m").expect_err("no usage, no bill");
    assert!(matches!(error, UpstreamError::Protocol(_)));
}

#[test]
fn a_stream_becomes_the_messages_event_sequence_metered_from_its_last_usage() {
    let events = stream_events(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hmm", "thought": true}]}}],
               "usageMetadata": {"promptTokenCount": 50, "totalTokenCount": 50}, "responseId": "r1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
               "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 1, "totalTokenCount": 51}, "responseId": "r1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo."}, {"functionCall": {"id": "call-1", "name": "f", "args": {"x": 1}}}]},
                               "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 50, "cachedContentTokenCount": 20, "candidatesTokenCount": 7,
                                 "thoughtsTokenCount": 5, "totalTokenCount": 62}, "responseId": "r1"}),
    ])
    .expect("a whole stream");
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let start = data(&events[0]);
    assert_eq!(start["message"]["id"], "msg_r1");
    assert_eq!(start["message"]["model"], "gemini-2.5-flash");
    assert_eq!(start["message"]["usage"]["input_tokens"], 50);
    assert_eq!(
        data(&events[2])["delta"],
        json!({"type": "thinking_delta", "thinking": "Hmm"})
    );
    assert_eq!(data(&events[4])["index"], 1);
    assert_eq!(
        data(&events[6])["delta"],
        json!({"type": "text_delta", "text": "lo."})
    );
    assert_eq!(
        data(&events[8])["content_block"],
        json!({"type": "tool_use", "id": "call-1", "name": "f", "input": {}})
    );
    assert_eq!(data(&events[9])["delta"]["partial_json"], r#"{"x":1}"#);
    let delta = data(&events[11]);
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");

    let mut meter = UsageAccumulator::default();
    for event in &events {
        meter.observe(event);
    }
    assert!(meter.saw_message_stop() && meter.saw_final_usage() && !meter.saw_error());
    assert_eq!(
        meter.reported_usage(),
        Some(TokenUsage {
            input_tokens: 30,
            cache_read_input_tokens: 20,
            output_tokens: 12,
            ..TokenUsage::default()
        })
    );
    assert_eq!(meter.generated_bytes(), 3 + 6 + 7);
}

#[test]
fn a_cut_stream_is_a_protocol_error_and_an_error_chunk_an_error_event() {
    let cut = stream_events(&[json!({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]})]);
    assert!(matches!(cut, Err(UpstreamError::Protocol(_))), "{cut:?}");
    assert!(matches!(stream_events(&[]), Err(UpstreamError::Protocol(_))));

    let failed = stream_events(&[
        json!({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}], "responseId": "r"}),
        json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
        json!({"candidates": [{"content": {"parts": [{"text": "never"}]}, "finishReason": "STOP"}]}),
    ])
    .expect("an error event");
    let last = failed.last().expect("events");
    assert_eq!(last.event, "error");
    assert_eq!(
        data(last)["error"],
        json!({"type": "overloaded_error", "message": "The model is overloaded."})
    );
    let mut meter = UsageAccumulator::default();
    for event in &failed {
        meter.observe(event);
    }
    assert!(meter.saw_error() && !meter.saw_message_stop());
}

#[tokio::test]
async fn the_event_stream_is_translated_as_it_arrives() {
    use futures_util::StreamExt;
    let chunks: Vec<Result<SseEvent, UpstreamError>> = vec![
        Ok(chunk(
            json!({"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1}}),
        )),
        Err(UpstreamError::Timeout("idle".to_owned())),
    ];
    let events: Vec<_> =
        crate::gemini::reply::message_events(Box::pin(futures_util::stream::iter(chunks)), "m".to_owned())
            .collect()
            .await;
    let names: Vec<String> = events
        .iter()
        .map(|event| match event {
            Ok(event) => event.event.clone(),
            Err(error) => format!("Err({error})"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "Err(upstream timed out: idle)"
        ],
        "a transport failure ends the stream where it happened"
    );
}

#[test]
fn refusals_keep_status_and_learn_retry_after_from_retry_info() {
    let quota = json!({"error": {
        "code": 429,
        "message": "Resource has been exhausted (e.g. check quota).",
        "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "19.2s"}],
    }});
    let error = refusal(UpstreamError::Status {
        status: 429,
        body: bytes::Bytes::from(quota.to_string()),
        headers: Vec::new(),
    });
    assert_eq!(error.passed_header("retry-after"), Some("20"));
    let (status, message) = refused_with(error.clone());
    assert_eq!(
        (status, message.as_str()),
        (429, "Resource has been exhausted (e.g. check quota).")
    );
    let UpstreamError::Status { body, .. } = error else {
        unreachable!()
    };
    let envelope: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(envelope["error"]["type"], "rate_limit_error");

    let sent = refusal(UpstreamError::Status {
        status: 429,
        body: bytes::Bytes::from(quota.to_string()),
        headers: vec![("retry-after".to_owned(), "7".to_owned())],
    });
    assert_eq!(
        sent.passed_header("retry-after"),
        Some("7"),
        "Google's header wins"
    );

    let bad_key = json!({"error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
    }});
    let error = refusal(UpstreamError::status(
        400,
        bytes::Bytes::from(bad_key.to_string()),
    ));
    assert!(error.is_provider_account_problem(), "{error:?}");
    assert_eq!(refused_with(error).0, 401);

    assert_eq!(retry_delay_seconds("20s"), Some(20));
    assert_eq!(retry_delay_seconds("0.000001s"), Some(1));
    assert_eq!(retry_delay_seconds("3.000s"), Some(3));
    assert_eq!(retry_delay_seconds("soon"), None);
}

proptest! {
    /// Whatever counts Gemini reports, the meter sees exactly: uncached input plus cache
    /// reads is the prompt (plus tool-use prompt tokens), output is candidates plus thoughts,
    /// and the whole reply, the stream's meter and the reply's own usage all agree.
    #[test]
    fn usage_metadata_maps_exactly(
        prompt in 0_u64..2_000_000,
        cached_share in 0_u64..=100,
        candidates in 0_u64..200_000,
        thoughts in 0_u64..200_000,
        tool_use_prompt in 0_u64..10_000,
    ) {
        let cached = prompt * cached_share / 100;
        let metadata = json!({
            "promptTokenCount": prompt,
            "cachedContentTokenCount": cached,
            "candidatesTokenCount": candidates,
            "thoughtsTokenCount": thoughts,
            "toolUsePromptTokenCount": tool_use_prompt,
            "totalTokenCount": prompt + candidates + thoughts + tool_use_prompt,
        });
        let usage = parse_usage(&metadata);
        prop_assert_eq!(usage.input_tokens + usage.cache_read_input_tokens, prompt + tool_use_prompt);
        prop_assert_eq!(usage.cache_read_input_tokens, cached);
        prop_assert_eq!(usage.output_tokens, candidates + thoughts);
        prop_assert_eq!(usage.rate_limited_input_tokens(), prompt - cached + tool_use_prompt);

        let reply = json!({
            "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": metadata,
        });
        let (whole, whole_usage) = message(&reply, "m").expect("a message");
        prop_assert_eq!(whole_usage, usage);
        prop_assert_eq!(crate::sse::parse_usage(&whole["usage"]), usage);

        let events = stream_events(&[
            json!({"candidates": [{"content": {"parts": [{"text": "x"}]}}],
                   "usageMetadata": {"promptTokenCount": prompt}}),
            reply,
        ])
        .expect("a stream");
        let mut meter = UsageAccumulator::default();
        for event in &events {
            meter.observe(event);
        }
        prop_assert_eq!(meter.reported_usage(), Some(usage));
    }
}

#[test]
fn an_embeddings_body_becomes_batch_embed_contents_and_its_reply_openais() {
    use crate::embeddings::encoded;
    use crate::gemini::embed::{to_batch_embed, to_openai, with_prompt_tokens};
    let body = json!({"model": "gemini-embedding-001", "input": ["héllo", "b"], "dimensions": 3, "encoding_format": "base64", "user": "u"});
    let call = to_batch_embed(body.to_string().as_bytes()).expect("translated");
    assert_eq!(call.model, "gemini-embedding-001");
    assert_eq!(
        call.body,
        json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "héllo"}]}, "outputDimensionality": 3},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 3},
        ]}),
        "OpenAI's `user` and `encoding_format` are not Google's to see"
    );
    assert_eq!(
        call.count_body,
        json!({"contents": [{"role": "user", "parts": [{"text": "héllo"}, {"text": "b"}]}]})
    );
    assert_eq!(call.text_bytes, 7, "UTF-8 bytes");

    let reply = json!({"embeddings": [{"values": [0.5, -0.25, 0.013671875]}, {"values": [1, 0, -1]}]});
    let (openai, reported) = to_openai(&reply, &call).expect("a reply");
    assert_eq!(reported, None);
    assert_eq!(
        openai["data"][0]["embedding"],
        encoded(&[0.5, -0.25, 0.013_671_875], true)
    );
    assert_eq!(
        openai["data"][1],
        json!({"object": "embedding", "index": 1, "embedding": encoded(&[1.0, 0.0, -1.0], true)})
    );
    assert_eq!(
        with_prompt_tokens(openai, 9)["usage"],
        json!({"prompt_tokens": 9, "total_tokens": 9})
    );

    let floats = json!({"model": "models/gemini-embedding-001", "input": "x"});
    let call = to_batch_embed(floats.to_string().as_bytes()).expect("translated");
    assert_eq!(
        call.body["requests"][0].get("outputDimensionality"),
        None,
        "the model's own length"
    );
    let reply = json!({"embeddings": [{"values": [0.1, 0.2]}], "usageMetadata": {"promptTokenCount": 4}});
    let (openai, reported) = to_openai(&reply, &call).expect("a reply");
    assert_eq!(reported, Some(4));
    assert_eq!(
        openai["data"][0]["embedding"],
        json!([0.1, 0.2]),
        "Google's numbers as it wrote them"
    );
    assert_eq!(openai["usage"]["prompt_tokens"], 4);
}

#[test]
fn what_gemini_cannot_embed_is_refused_and_a_short_reply_is_a_protocol_error() {
    use crate::gemini::embed::{to_batch_embed, to_openai};
    for body in [
        json!({"model": "m", "input": [1, 2, 3]}),
        json!({"model": "m", "input": [[1, 2], [3]]}),
    ] {
        let (status, message) =
            refused_with(to_batch_embed(body.to_string().as_bytes()).expect_err("refused"));
        assert_eq!(status, 400);
        assert!(message.contains("token ids"), "{message}");
    }
    let (status, _) = refused_with(
        to_batch_embed(
            json!({"model": "m", "input": "x", "dimensions": 0})
                .to_string()
                .as_bytes(),
        )
        .expect_err("refused"),
    );
    assert_eq!(status, 400);
    let call = to_batch_embed(json!({"model": "m", "input": ["a", "b"]}).to_string().as_bytes())
        .expect("translated");
    for reply in [
        json!({"embeddings": [{"values": [0.1]}]}),
        json!({"embeddings": [{"values": [0.1]}, {"values": ["0.1"]}]}),
        json!({}),
    ] {
        assert!(
            matches!(to_openai(&reply, &call), Err(UpstreamError::Protocol(_))),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn embeddings_google_can_neither_report_nor_count_are_billed_their_bytes_never_free() {
    use axum::extract::Path;
    use axum::http::StatusCode;
    use std::time::Duration;

    use crate::UpstreamRequest;
    use crate::gemini::{GeminiClient, GeminiConfig};

    let server = axum::Router::new().route(
        "/v1beta/models/{call}",
        axum::routing::post(|Path(call): Path<String>| async move {
            if call.ends_with(":countTokens") {
                (StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned())
            } else {
                (
                    StatusCode::OK,
                    json!({"embeddings": [{"values": [0.5]}]}).to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, server).await });
    let client = GeminiClient::new(GeminiConfig {
        base_url: format!("http://{addr}"),
        api_key: Some("key".to_owned()),
        connect_timeout: Duration::from_secs(2),
        ca_pem: None,
        idle_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    })
    .expect("a client");
    let reply = client
        .embeddings(UpstreamRequest {
            body: bytes::Bytes::from(json!({"model": "m", "input": "eleven byte"}).to_string()),
            stream: false,
            anthropic_version: None,
            anthropic_beta: None,
            client_headers: reqwest::header::HeaderMap::new(),
            query: None,
        })
        .await
        .expect("the vectors were made");
    let crate::UpstreamReply::Message { body, usage } = reply else {
        panic!("a whole reply");
    };
    assert_eq!(usage.input_tokens, 11);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["usage"]["prompt_tokens"], 11);
}

#[test]
fn a_thought_signature_rides_in_the_tool_use_id_and_comes_back_as_google_wrote_it() {
    use crate::gemini::{signed_id, split_signed_id};
    let signature = "+/+/AbA=";
    let id = signed_id("call_1", Some(signature));
    assert!(
        id.chars()
            .all(|character| character.is_ascii_alphanumeric() || "_-".contains(character)),
        "{id}"
    );
    assert_eq!(split_signed_id(&id), ("call_1", Some(signature.to_owned())));
    assert_eq!(signed_id("call_1", None), "call_1");
    assert_eq!(signed_id("call_1", Some("not base64!")), "call_1");
    assert_eq!(split_signed_id("toolu_01abc"), ("toolu_01abc", None));
    assert_eq!(
        split_signed_id("x__thought__!!"),
        ("x__thought__!!", None),
        "not ours: left whole"
    );

    // Streamed, the call's id carries the signature too.
    let events = stream_events(&[json!({
        "candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": signature}]},
                        "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1},
        "responseId": "r1",
    })])
    .expect("events");
    let start = events
        .iter()
        .map(data)
        .find(|data| data["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(
        split_signed_id(start["content_block"]["id"].as_str().expect("id"))
            .1
            .as_deref(),
        Some(signature)
    );
}

#[test]
fn gemini_3_gets_each_call_s_signature_back_and_the_skip_only_where_a_turn_has_none() {
    use crate::gemini::signed_id;
    let signed = signed_id("call_1", Some("c2ln"));
    let turns = |first: &str| {
        json!({
            "model": "gemini-3-pro-preview",
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "Go"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": first, "name": "f", "input": {}},
                    {"type": "tool_use", "id": "call_2", "name": "f", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": first, "content": "a"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "b"},
                ]},
            ],
        })
    };
    let (_, body) = translate(turns(&signed)).expect("translated");
    let parts = &body["contents"][1]["parts"];
    assert_eq!(parts[0]["thoughtSignature"], "c2ln");
    assert_eq!(parts[0]["functionCall"]["id"], "call_1");
    assert!(
        parts[1].get("thoughtSignature").is_none(),
        "a parallel call has none of its own"
    );
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"]["id"],
        "call_1"
    );

    let (_, body) = translate(turns("toolu_foreign")).expect("translated");
    assert_eq!(
        body["contents"][1]["parts"][0]["thoughtSignature"],
        "skip_thought_signature_validator"
    );
    assert!(body["contents"][1]["parts"][1].get("thoughtSignature").is_none());

    let mut older = turns("toolu_foreign");
    older["model"] = json!("gemini-2.5-flash");
    let (_, body) = translate(older).expect("translated");
    assert!(body["contents"][1]["parts"][0].get("thoughtSignature").is_none());
}
