//! The built-in offline model: answers Messages API requests with plausible English-ish text,
//! a JSON text or a tool call (`answer` says which), in Anthropic's exact JSON and SSE shapes,
//! and Embeddings requests in OpenAI's (`embeddings`), so tollgate and its clients can run, be tested and be benchmarked with no provider
//! account. The reply depends only on the request (a hash of its system prompt and
//! messages); only the message and tool-use ids differ between calls. `system` messages
//! inside `messages` (Anthropic's mid-conversation system beta) are read as part of the
//! system prompt, and their tokens are counted as input. It must never report more input
//! tokens than the request body's byte length plus 512, because the gateway reserves credit
//! on that bound before the reply is known.

mod answer;
pub mod embeddings;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tollgate_core::usage::TokenUsage;

use crate::simulated::answer::Answer;
use crate::sse::SseEvent;
use crate::{EventStream, UpstreamError, UpstreamReply, UpstreamRequest};

#[derive(Clone, Copy, Debug)]
pub struct SimulatedConfig {
    /// Output pacing, as a real model streams; 0 answers at once.
    pub tokens_per_second: u32,
}

/// The simulated model. Cheap to clone: clones share the id counter.
#[derive(Clone, Debug)]
pub struct Simulated {
    config: SimulatedConfig,
    /// Mixed into message ids so that identical requests still get distinct ids.
    replies_count: Arc<AtomicU64>,
    /// Random per instance, so ids also differ across restarts and processes.
    id_salt: u64,
}

/// Replies are between these many tokens long before `max_tokens` and stop sequences apply.
const OUTPUT_TOKENS_MIN: u64 = 20;
const OUTPUT_TOKENS_MAX: u64 = 300;
/// Streams send at most this many deltas per second, grouping tokens at high speeds.
const DELTAS_PER_SECOND_MAX: u32 = 20;
/// Tokens per delta when there is no pacing.
const TOKENS_PER_DELTA_UNPACED: usize = 4;
/// The slack over the body length that the gateway's credit reservation allows.
const INPUT_TOKENS_SLACK: u64 = 512;
/// A JSON text (an answer or a tool's input) counts one output token per this many
/// characters, as tokenizers split JSON finely.
const JSON_CHARACTERS_PER_TOKEN: usize = 4;
/// Streams slower than this between pings get one, as Anthropic keeps slow streams alive
/// (Claude Code gives up on a stream silent for five minutes).
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Mixed into the seed of tool-use ids, so they differ from the message id.
const TOOL_USE_ID_SALT: u64 = 0x7f4a_7c15_9e37_79b9;

impl Simulated {
    pub fn new(config: SimulatedConfig) -> Simulated {
        Simulated {
            config,
            replies_count: Arc::new(AtomicU64::new(0)),
            // std's randomly keyed hasher is OS randomness enough for ids, without `rand`.
            id_salt: std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0_u64),
        }
    }

    /// Answers `POST /v1/messages`. A malformed body is a 400 with Anthropic's envelope.
    pub async fn messages(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        // Deadlines are offsets from this instant, so pacing never drifts with scheduling.
        let start = Instant::now();
        let parsed = ParsedRequest::parse(&request.body, true)?;
        let reply_number = self.replies_count.fetch_add(1, Ordering::Relaxed);
        let id = anthropic_id("msg_01", parsed.seed ^ self.id_salt, reply_number);
        let tool_use_id = anthropic_id(
            "toolu_01",
            parsed.seed ^ self.id_salt ^ TOOL_USE_ID_SALT,
            reply_number,
        );
        let generation = Generation::generate(&parsed);
        if request.stream {
            let events = stream_events(
                &id,
                &tool_use_id,
                &parsed,
                &generation,
                self.config.tokens_per_second,
            )?;
            let paced = self.config.tokens_per_second > 0;
            let stream = futures_util::StreamExt::then(
                futures_util::stream::iter(events),
                move |(event, offset)| async move {
                    if paced {
                        tokio::time::sleep_until(start + offset).await;
                    }
                    Ok(event)
                },
            );
            let stream: EventStream = Box::pin(stream);
            return Ok(UpstreamReply::Stream(stream));
        }
        let text;
        let content = match &generation.content {
            Content::Text(pieces) => {
                text = pieces.concat();
                ContentBlock::Text { text: &text }
            }
            Content::ToolUse { name, input, .. } => ContentBlock::ToolUse {
                id: &tool_use_id,
                name,
                input,
            },
        };
        let body = MessageBody {
            id: &id,
            kind: "message",
            role: "assistant",
            model: &parsed.model,
            content: vec![content],
            stop_reason: Some(generation.stop_reason),
            stop_sequence: generation.stop_sequence.as_deref(),
            usage: WireUsage::new(parsed.input_tokens, generation.output_tokens),
        };
        let body = to_json(&body)?;
        if self.config.tokens_per_second > 0 {
            let offset = token_offset(generation.output_tokens, self.config.tokens_per_second);
            tokio::time::sleep_until(start + offset).await;
        }
        Ok(UpstreamReply::Message {
            body: Bytes::from(body),
            usage: TokenUsage {
                input_tokens: parsed.input_tokens,
                output_tokens: generation.output_tokens,
                ..TokenUsage::default()
            },
        })
    }

    /// Answers `POST /v1/embeddings` (OpenAI's shape) with a deterministic vector per input.
    pub fn embeddings(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        embeddings::answer(&request.body)
    }

    /// Answers `POST /v1/messages/count_tokens` with the same estimate `messages` bills.
    pub fn count_tokens(&self, request: UpstreamRequest) -> Result<u64, UpstreamError> {
        Ok(ParsedRequest::parse(&request.body, false)?.input_tokens)
    }
}

/// What the simulation needs from a request body.
struct ParsedRequest {
    model: String,
    max_tokens: u64,
    stop_sequences: Vec<String>,
    input_tokens: u64,
    /// Hash of the system prompt and messages: everything the reply text depends on.
    seed: u64,
    answer: Answer,
}

impl ParsedRequest {
    fn parse(body: &[u8], requires_max_tokens: bool) -> Result<ParsedRequest, UpstreamError> {
        let value: Value = serde_json::from_slice(body).map_err(|error| {
            UpstreamError::invalid_request(&format!("The request body is not valid JSON: {error}"))
        })?;
        let Some(object) = value.as_object() else {
            return Err(UpstreamError::invalid_request(
                "The request body must be a JSON object",
            ));
        };
        let model = match object.get("model") {
            Some(Value::String(model)) if !model.is_empty() => model.clone(),
            Some(_) => {
                return Err(UpstreamError::invalid_request(
                    "model: Input should be a valid string",
                ));
            }
            None => return Err(UpstreamError::invalid_request("model: Field required")),
        };
        let max_tokens = match object.get("max_tokens") {
            Some(value) => match value.as_u64() {
                Some(max_tokens) if max_tokens >= 1 => max_tokens,
                _ => {
                    return Err(UpstreamError::invalid_request(
                        "max_tokens: Input should be an integer greater than or equal to 1",
                    ));
                }
            },
            None if requires_max_tokens => {
                return Err(UpstreamError::invalid_request("max_tokens: Field required"));
            }
            None => 0,
        };
        let stop_sequences = match object.get("stop_sequences") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    UpstreamError::invalid_request("stop_sequences: Input should be a list of strings")
                })?,
            Some(_) => {
                return Err(UpstreamError::invalid_request(
                    "stop_sequences: Input should be a valid list",
                ));
            }
        };

        let mut walk = TextWalk::new();
        match object.get("system") {
            None | Some(Value::Null) => {}
            Some(Value::String(system)) => walk.count(system),
            Some(Value::Array(blocks)) => walk.content_blocks(blocks),
            Some(_) => {
                return Err(UpstreamError::invalid_request(
                    "system: Input should be a valid string or a list of text blocks",
                ));
            }
        }
        let Some(Value::Array(messages)) = object.get("messages") else {
            return Err(UpstreamError::invalid_request(
                "messages: Field required and must be a list",
            ));
        };
        if messages.is_empty() {
            return Err(UpstreamError::invalid_request(
                "messages: at least one message is required",
            ));
        }
        for (index, message) in messages.iter().enumerate() {
            let role = message.get("role").and_then(Value::as_str);
            // `system` messages between turns are Anthropic's mid-conversation system beta;
            // they count and seed like the top-level system prompt.
            if !matches!(role, Some("user" | "assistant" | "system")) {
                return Err(UpstreamError::invalid_request(&format!(
                    "messages.{index}.role: Input should be 'user' or 'assistant'"
                )));
            }
            walk.hash_only(role.unwrap_or_default());
            match message.get("content") {
                Some(Value::String(text)) => walk.count(text),
                Some(Value::Array(blocks)) => walk.content_blocks(blocks),
                _ => {
                    return Err(UpstreamError::invalid_request(&format!(
                        "messages.{index}.content: Input should be a valid string or a list of content blocks"
                    )));
                }
            }
        }
        // Tool definitions cost input tokens upstream too, but do not change the reply.
        if let Some(Value::Array(tools)) = object.get("tools") {
            for tool in tools {
                walk.count_json(tool);
            }
        }

        let messages_count = u64::try_from(messages.len()).unwrap_or(u64::MAX);
        let estimate = walk
            .bytes
            .div_ceil(4)
            .saturating_add(messages_count.saturating_mul(3))
            .max(1);
        // The walk counts re-serialized JSON, which could in odd cases (number formats)
        // exceed the original bytes; the gateway's reservation bound must hold regardless.
        let body_len = u64::try_from(body.len()).unwrap_or(u64::MAX);
        let input_tokens = estimate.min(body_len.saturating_add(INPUT_TOKENS_SLACK));
        let answer = answer::choose(object)?;
        Ok(ParsedRequest {
            model,
            max_tokens,
            stop_sequences,
            input_tokens,
            seed: walk.hash,
            answer,
        })
    }
}

/// Walks the request's text, counting its bytes for the input estimate and hashing it for
/// the reply seed. FNV-1a, because it is stable across Rust versions, unlike `DefaultHasher`.
struct TextWalk {
    bytes: u64,
    hash: u64,
}

impl TextWalk {
    fn new() -> TextWalk {
        TextWalk {
            bytes: 0,
            hash: 0xcbf2_9ce4_8422_2325,
        }
    }

    fn hash_only(&mut self, text: &str) {
        // The separator keeps ["ab", "c"] and ["a", "bc"] apart.
        for byte in text.as_bytes().iter().chain(&[0xff]) {
            self.hash ^= u64::from(*byte);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn count(&mut self, text: &str) {
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(text.len()).unwrap_or(u64::MAX));
        self.hash_only(text);
    }

    fn count_json(&mut self, value: &Value) {
        self.count(&value.to_string());
    }

    fn content_blocks(&mut self, blocks: &[Value]) {
        for block in blocks {
            let text_field = |name: &str| block.get(name).and_then(Value::as_str);
            match block.get("type").and_then(Value::as_str) {
                Some("text") => self.count(text_field("text").unwrap_or_default()),
                Some("thinking") => self.count(text_field("thinking").unwrap_or_default()),
                Some("tool_use") => {
                    self.count(text_field("name").unwrap_or_default());
                    if let Some(input) = block.get("input") {
                        self.count_json(input);
                    }
                }
                Some("tool_result") => match block.get("content") {
                    Some(Value::String(text)) => self.count(text),
                    Some(Value::Array(inner)) => self.content_blocks(inner),
                    _ => {}
                },
                // Images, documents and future block kinds: their JSON size is a crude but
                // safe overestimate (it is bounded by the body, which holds that JSON).
                _ => self.count_json(block),
            }
        }
    }
}

/// The reply: its content, one string per output token, and why it stopped.
struct Generation {
    content: Content,
    /// Tokens the model produced, including a stop sequence that was cut from the text.
    output_tokens: u64,
    stop_reason: &'static str,
    stop_sequence: Option<String>,
}

enum Content {
    /// The reply text, one output token per piece; they concatenate to the content text.
    Text(Vec<String>),
    /// A tool call; `pieces` is its input's JSON, one output token per piece.
    ToolUse {
        name: String,
        input: Value,
        pieces: Vec<String>,
    },
}

impl Generation {
    fn generate(request: &ParsedRequest) -> Generation {
        let mut random = SplitMix64(request.seed);
        match &request.answer {
            Answer::Prose => Generation::text(request, prose_pieces(&mut random)),
            Answer::Json(Some(value)) => Generation::text(request, json_pieces(&value.to_string())),
            Answer::Json(None) => {
                let answer = prose_pieces(&mut random).concat();
                let value = json!({ "answer": answer.trim_start() });
                Generation::text(request, json_pieces(&value.to_string()))
            }
            Answer::ToolUse { name, input } => {
                let pieces = json_pieces(&input.to_string());
                let output_tokens = u64::try_from(pieces.len()).unwrap_or(u64::MAX);
                if output_tokens > request.max_tokens {
                    // A limit too small for the whole call: prose cut at the limit, rather
                    // than a tool call whose input is not valid JSON.
                    return Generation::text(request, prose_pieces(&mut random));
                }
                Generation {
                    content: Content::ToolUse {
                        name: name.clone(),
                        input: input.clone(),
                        pieces,
                    },
                    output_tokens,
                    stop_reason: "tool_use",
                    stop_sequence: None,
                }
            }
        }
    }

    /// A text reply of `pieces`, cut at `max_tokens` and at the earliest stop sequence.
    fn text(request: &ParsedRequest, mut pieces: Vec<String>) -> Generation {
        let natural_len = u64::try_from(pieces.len()).unwrap_or(u64::MAX);
        let (tokens_count, mut stop_reason) = if request.max_tokens < natural_len {
            (request.max_tokens, "max_tokens")
        } else {
            (natural_len, "end_turn")
        };
        // Cut the natural reply, so a capped reply is a prefix of the full one.
        pieces.truncate(usize::try_from(tokens_count).unwrap_or(usize::MAX));
        let mut output_tokens = tokens_count;
        let mut stop_sequence = None;

        let text = pieces.concat();
        let earliest_stop = request
            .stop_sequences
            .iter()
            .filter(|sequence| !sequence.is_empty())
            .filter_map(|sequence| text.find(sequence.as_str()).map(|at| (at, sequence)))
            .min_by_key(|(at, _)| *at);
        if let Some((cut_at, sequence)) = earliest_stop {
            let sequence_end = cut_at + sequence.len();
            let mut kept = Vec::new();
            let mut piece_start = 0;
            output_tokens = 0;
            for piece in pieces {
                if piece_start >= sequence_end {
                    break;
                }
                output_tokens += 1;
                if piece_start < cut_at {
                    let keep_len = (cut_at - piece_start).min(piece.len());
                    kept.push(piece[..keep_len].to_owned());
                }
                piece_start += piece.len();
            }
            pieces = kept;
            stop_reason = "stop_sequence";
            stop_sequence = Some(sequence.clone());
        }
        Generation {
            content: Content::Text(pieces),
            output_tokens,
            stop_reason,
            stop_sequence,
        }
    }
}

/// A natural prose reply: its length, then its words, drawn from `random`.
fn prose_pieces(random: &mut SplitMix64) -> Vec<String> {
    let natural_len = OUTPUT_TOKENS_MIN + random.next() % (OUTPUT_TOKENS_MAX - OUTPUT_TOKENS_MIN + 1);
    english_ish_pieces(random, natural_len)
}

/// A JSON text in pieces of a few characters, one output token each.
fn json_pieces(text: &str) -> Vec<String> {
    let characters: Vec<char> = text.chars().collect();
    characters
        .chunks(JSON_CHARACTERS_PER_TOKEN)
        .map(|chunk| chunk.iter().collect())
        .collect()
}

const WORDS: &[&str] = &[
    "the", "a", "model", "request", "token", "answer", "system", "data", "time", "value", "result", "query",
    "gateway", "stream", "message", "reply", "simple", "careful", "quick", "quiet", "bright", "small",
    "large", "early", "later", "often", "rarely", "always", "never", "and", "but", "so", "because", "while",
    "when", "if", "then", "with", "without", "for", "from", "into", "over", "under", "between", "each",
    "every", "some", "many", "few", "is", "was", "will", "can", "should", "might", "makes", "takes", "gives",
    "finds", "builds", "reads", "writes", "sends", "keeps", "holds", "shows", "learns", "counts", "checks",
    "moves", "waits", "runs", "starts", "ends", "river", "mountain", "garden", "window", "letter", "number",
    "pattern", "question", "story", "idea", "reason", "method", "signal", "record", "journey", "balance",
    "harbor", "lantern", "meadow", "engine", "circuit", "ledger", "credit", "budget", "limit", "clock",
    "thread", "folder",
];

/// `count` pieces of prose: sentences of 5 to 14 words, paragraphs of 2 to 5 sentences.
/// Each piece is one word with the space or break before it, so the text never ends in one.
fn english_ish_pieces(random: &mut SplitMix64, count: u64) -> Vec<String> {
    let mut pieces = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut sentence_left = 0;
    let mut sentences_left_in_paragraph = 2 + random.below(4);
    for index in 0..count {
        let word = WORDS[usize::try_from(random.below(WORDS.len() as u64)).unwrap_or(0)];
        let mut piece = String::with_capacity(word.len() + 3);
        let starts_sentence = sentence_left == 0;
        if starts_sentence {
            sentence_left = 5 + random.below(10);
            if index > 0 {
                sentences_left_in_paragraph -= 1;
                if sentences_left_in_paragraph == 0 {
                    sentences_left_in_paragraph = 2 + random.below(4);
                    piece.push_str("\n\n");
                } else {
                    piece.push(' ');
                }
            }
        } else {
            piece.push(' ');
        }
        if starts_sentence {
            let mut characters = word.chars();
            if let Some(first) = characters.next() {
                piece.extend(first.to_uppercase());
                piece.push_str(characters.as_str());
            }
        } else {
            piece.push_str(word);
        }
        sentence_left -= 1;
        if sentence_left == 0 || index + 1 == count {
            piece.push('.');
            sentence_left = 0;
        } else if sentence_left > 2 && random.below(12) == 0 {
            piece.push(',');
        }
        pieces.push(piece);
    }
    pieces
}

/// A tiny deterministic generator (Vigna's SplitMix64): enough for word choice and ids, and
/// it keeps `rand` out of the dependency graph.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// `prefix` (`msg_01`, `toolu_01`) and 22 base62 characters, as Anthropic's ids look.
fn anthropic_id(prefix: &str, seed: u64, reply_number: u64) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut random = SplitMix64(seed ^ reply_number.wrapping_mul(0xd6e8_feb8_6659_fd93));
    let mut id = String::with_capacity(prefix.len() + 22);
    id.push_str(prefix);
    for _ in 0..22 {
        id.push(char::from(BASE62[usize::try_from(random.below(62)).unwrap_or(0)]));
    }
    id
}

/// When the `tokens`-th token is due at `tokens_per_second`.
fn token_offset(tokens: u64, tokens_per_second: u32) -> Duration {
    if tokens_per_second == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(tokens.saturating_mul(1_000_000_000) / u64::from(tokens_per_second))
}

/// Anthropic's event sequence for the reply, each with the offset from the start at which
/// it is due: `message_start`, the content block's start, a `ping`, its deltas (text or
/// `input_json_delta`), its stop, `message_delta`, `message_stop`, with a further `ping`
/// at each `PING_INTERVAL` of stream time.
fn stream_events(
    id: &str,
    tool_use_id: &str,
    request: &ParsedRequest,
    generation: &Generation,
    tokens_per_second: u32,
) -> Result<Vec<(SseEvent, Duration)>, UpstreamError> {
    let tokens_per_delta = if tokens_per_second == 0 {
        TOKENS_PER_DELTA_UNPACED
    } else {
        usize::try_from((tokens_per_second / DELTAS_PER_SECOND_MAX).max(1)).unwrap_or(1)
    };
    let event = |name: &str, data: String| SseEvent {
        event: name.to_owned(),
        data,
    };
    // A streamed `tool_use` block starts with an empty input; the deltas carry the real one.
    let empty_input = json!({});
    let (pieces, opening_block) = match &generation.content {
        Content::Text(pieces) => (pieces, ContentBlock::Text { text: "" }),
        Content::ToolUse { name, pieces, .. } => (
            pieces,
            ContentBlock::ToolUse {
                id: tool_use_id,
                name,
                input: &empty_input,
            },
        ),
    };
    let mut events = Vec::with_capacity(pieces.len() / tokens_per_delta + 7);
    let message_start = MessageStart {
        kind: "message_start",
        message: MessageBody {
            id,
            kind: "message",
            role: "assistant",
            model: &request.model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: WireUsage::new(request.input_tokens, 1),
        },
    };
    events.push((event("message_start", to_json(&message_start)?), Duration::ZERO));
    let block_start = ContentBlockStart {
        kind: "content_block_start",
        index: 0,
        content_block: opening_block,
    };
    events.push((
        event("content_block_start", to_json(&block_start)?),
        Duration::ZERO,
    ));
    events.push((ping_event(), Duration::ZERO));
    let mut tokens_sent: u64 = 0;
    for group in pieces.chunks(tokens_per_delta) {
        tokens_sent += u64::try_from(group.len()).unwrap_or(u64::MAX);
        let text = group.concat();
        if text.is_empty() {
            continue;
        }
        let delta = match generation.content {
            Content::Text(_) => Delta::TextDelta { text: &text },
            Content::ToolUse { .. } => Delta::InputJsonDelta { partial_json: &text },
        };
        let delta = ContentBlockDelta {
            kind: "content_block_delta",
            index: 0,
            delta,
        };
        events.push((
            event("content_block_delta", to_json(&delta)?),
            token_offset(tokens_sent, tokens_per_second),
        ));
    }
    let end = token_offset(generation.output_tokens, tokens_per_second);
    events.push((
        event(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#.to_owned(),
        ),
        end,
    ));
    let message_delta = MessageDelta {
        kind: "message_delta",
        delta: StopDelta {
            stop_reason: generation.stop_reason,
            stop_sequence: generation.stop_sequence.as_deref(),
        },
        usage: OutputUsage {
            output_tokens: generation.output_tokens,
        },
    };
    events.push((event("message_delta", to_json(&message_delta)?), end));
    events.push((
        event("message_stop", r#"{"type":"message_stop"}"#.to_owned()),
        end,
    ));
    Ok(with_periodic_pings(events))
}

fn ping_event() -> SseEvent {
    SseEvent {
        event: "ping".to_owned(),
        data: r#"{"type": "ping"}"#.to_owned(),
    }
}

/// `events` with a `ping` due at each whole `PING_INTERVAL` of stream time that passes
/// before the next event is due, so a slow stream is never silent for longer.
fn with_periodic_pings(events: Vec<(SseEvent, Duration)>) -> Vec<(SseEvent, Duration)> {
    let mut pinged = Vec::with_capacity(events.len());
    let mut next_ping = PING_INTERVAL;
    for (event, offset) in events {
        while offset > next_ping {
            pinged.push((ping_event(), next_ping));
            next_ping += PING_INTERVAL;
        }
        pinged.push((event, offset));
    }
    pinged
}

fn to_json(value: &impl Serialize) -> Result<String, UpstreamError> {
    serde_json::to_string(value)
        .map_err(|error| UpstreamError::Protocol(format!("could not encode the simulated reply: {error}")))
}

// Wire shapes, in Anthropic's field order. They live here, not in the gateway, because the
// simulated model plays the upstream: the gateway forwards these bytes as a provider's.

#[derive(Serialize)]
struct MessageBody<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<ContentBlock<'a>>,
    stop_reason: Option<&'a str>,
    stop_sequence: Option<&'a str>,
    usage: WireUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
}

#[derive(Serialize)]
struct WireUsage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation: CacheCreation,
    output_tokens: u64,
    service_tier: &'static str,
}

#[derive(Serialize)]
struct CacheCreation {
    ephemeral_5m_input_tokens: u64,
    ephemeral_1h_input_tokens: u64,
}

impl WireUsage {
    fn new(input_tokens: u64, output_tokens: u64) -> WireUsage {
        WireUsage {
            input_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            cache_creation: CacheCreation {
                ephemeral_5m_input_tokens: 0,
                ephemeral_1h_input_tokens: 0,
            },
            output_tokens,
            service_tier: "standard",
        }
    }
}

#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: MessageBody<'a>,
}

#[derive(Serialize)]
struct ContentBlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: ContentBlock<'a>,
}

#[derive(Serialize)]
struct ContentBlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: Delta<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta<'a>,
    usage: OutputUsage,
}

#[derive(Serialize)]
struct StopDelta<'a> {
    stop_reason: &'a str,
    stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u64,
}

#[cfg(test)]
mod tests;
