//! Server-sent events as Anthropic streams them: an incremental parser over a byte stream,
//! the encoder for one event, and the usage accumulator that meters a stream as it passes
//! through. It reads only the usage and the event kinds; event bodies are forwarded verbatim.
//!
//! The parser is hand-rolled (about a hundred lines of the WHATWG event-stream algorithm)
//! rather than taken from `eventsource-stream`, because it must map transport errors into
//! `UpstreamError` and cap line sizes, and a dependency would not save much code.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tollgate_core::pricing::Multipliers;
use tollgate_core::usage::{Speed, TokenUsage};

use crate::UpstreamError;

/// One dispatched event: its name (`message` when the stream named none) and its data, with
/// multi-line data joined by `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

impl SseEvent {
    /// Encodes the event as `event: NAME\ndata: LINE\n...\n\n`. Each `\n` in `data` starts a
    /// new `data:` line, so the parser on the other end joins them back into the same data.
    pub fn to_bytes(&self) -> Bytes {
        let mut text = String::with_capacity(self.event.len() + self.data.len() + 16);
        text.push_str("event: ");
        text.push_str(&self.event);
        text.push('\n');
        for line in self.data.split('\n') {
            text.push_str("data: ");
            text.push_str(line);
            text.push('\n');
        }
        text.push('\n');
        Bytes::from(text)
    }
}

/// Turns a byte stream into SSE events, whatever the chunking: lines and events may be split
/// anywhere, lines end in `\n`, `\r\n` or `\r`, `:` comments are skipped, and an event left
/// incomplete at the end of the stream is dropped (as the SSE spec says). A transport error
/// or an oversized line is yielded as the last item.
pub fn parse_event_stream<S, E>(bytes: S) -> impl Stream<Item = Result<SseEvent, UpstreamError>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<UpstreamError>,
{
    let state = ParseState {
        bytes: Box::pin(bytes),
        decoder: SseDecoder::default(),
        pending_error: None,
        finished: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.decoder.ready.pop_front() {
                return Some((Ok(event), state));
            }
            if let Some(error) = state.pending_error.take() {
                return Some((Err(error), state));
            }
            if state.finished {
                return None;
            }
            match state.bytes.next().await {
                Some(Ok(chunk)) => {
                    if let Err(error) = state.decoder.feed(&chunk) {
                        state.pending_error = Some(error);
                        state.finished = true;
                    }
                }
                Some(Err(error)) => {
                    state.pending_error = Some(error.into());
                    state.finished = true;
                }
                None => {
                    state.decoder.finish();
                    state.finished = true;
                }
            }
        }
    })
}

/// Meters an Anthropic stream event by event. `message_start` sets the usage;
/// `message_delta` replaces the fields it carries (its counts are cumulative, not increments).
/// It also counts the bytes of generated text, thinking and tool input in the deltas, so a
/// stream cut short before its final count is still charged for what passed through.
#[derive(Default, Clone, Debug)]
pub struct UsageAccumulator {
    usage: TokenUsage,
    saw_usage: bool,
    saw_final_usage: bool,
    saw_error: bool,
    saw_message_stop: bool,
    /// The `model` of `message_start`: the model that served, which a server-side fallback
    /// may make another than the one asked for.
    served_model: Option<String>,
    saw_content: bool,
    generated_bytes: u64,
}

/// The part of a `content_block_delta` that was generated: `text_delta`'s text,
/// `thinking_delta`'s thinking, `input_json_delta`'s partial JSON. Other fields (signatures,
/// citations) are not output the model generated token by token, and are skipped.
#[derive(serde::Deserialize)]
struct ContentBlockDelta<'a> {
    #[serde(borrow)]
    delta: GeneratedDelta<'a>,
}

#[derive(serde::Deserialize)]
struct GeneratedDelta<'a> {
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<std::borrow::Cow<'a, str>>,
}

impl UsageAccumulator {
    /// Takes one event into account. Events whose JSON cannot be read are skipped: they are
    /// forwarded as they are, and metering stays with the last usage that could be read.
    pub fn observe(&mut self, event: &SseEvent) {
        match event_kind(event).as_deref() {
            Some("message_start") => {
                let data = parse_data(event);
                let message = data.as_ref().and_then(|data| data.get("message"));
                if let Some(model) = message
                    .and_then(|message| message.get("model"))
                    .and_then(serde_json::Value::as_str)
                {
                    self.served_model = Some(model.to_owned());
                }
                if let Some(usage) = message.and_then(|message| message.get("usage")).map(parse_usage) {
                    self.usage = usage;
                    self.saw_usage = true;
                }
            }
            Some("message_delta") => {
                if let Some(data) = parse_data(event)
                    && let Some(usage) = data.get("usage")
                {
                    let fields = UsageFields::read(usage);
                    self.saw_final_usage |= fields.output_tokens.is_some();
                    apply_usage_fields(&mut self.usage, &fields);
                    self.saw_usage = true;
                }
            }
            Some("content_block_delta") => {
                self.saw_content = true;
                if let Ok(ContentBlockDelta { delta }) = serde_json::from_str(&event.data) {
                    let generated = [delta.text, delta.thinking, delta.partial_json]
                        .iter()
                        .flatten()
                        .map(|text| text.len())
                        .sum::<usize>();
                    self.generated_bytes = self
                        .generated_bytes
                        .saturating_add(u64::try_from(generated).unwrap_or(u64::MAX));
                }
            }
            Some("message_stop") => self.saw_message_stop = true,
            Some("error") => self.saw_error = true,
            _ => {}
        }
    }

    pub fn usage(&self) -> TokenUsage {
        self.usage
    }

    /// The usage the stream reported, if it reported any.
    pub fn reported_usage(&self) -> Option<TokenUsage> {
        self.saw_usage.then_some(self.usage)
    }

    /// Whether a `message_delta` carried the output count: the stream's final usage.
    pub fn saw_final_usage(&self) -> bool {
        self.saw_final_usage
    }

    /// Bytes of generated text, thinking and tool input seen so far.
    pub fn generated_bytes(&self) -> u64 {
        self.generated_bytes
    }

    /// Whether an `error` event arrived: the upstream failed mid-stream.
    pub fn saw_error(&self) -> bool {
        self.saw_error
    }

    /// Whether the stream reached `message_stop`; without it the stream was cut short.
    pub fn saw_message_stop(&self) -> bool {
        self.saw_message_stop
    }

    /// The model `message_start` named, if it named one.
    pub fn served_model(&self) -> Option<&str> {
        self.served_model.as_deref()
    }

    /// Whether any `content_block_delta` arrived, i.e. the model produced output.
    pub fn saw_content(&self) -> bool {
        self.saw_content
    }
}

/// Reads an Anthropic `usage` object (of a message, a `message_start` or a `message_delta`).
/// Absent fields count as zero. Cache writes are split by lifetime when the `cache_creation`
/// object is present; otherwise all `cache_creation_input_tokens` count as 5-minute writes.
/// Web searches come from `server_tool_use.web_search_requests`, the speed that served from
/// `speed` (left unknown when absent or not one Anthropic names).
pub fn parse_usage(value: &serde_json::Value) -> TokenUsage {
    let mut usage = TokenUsage::default();
    apply_usage_fields(&mut usage, &UsageFields::read(value));
    usage
}

/// The usage fields one JSON object carries; `None` where the field is absent or null.
struct UsageFields {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    /// `(ephemeral_5m, ephemeral_1h)` from the `cache_creation` object.
    cache_creation_split: Option<(u64, u64)>,
    web_search_requests: Option<u64>,
    speed: Option<Speed>,
    /// `inference_geo`: any geography but `"global"` is resident.
    resident: Option<bool>,
}

impl UsageFields {
    fn read(value: &serde_json::Value) -> UsageFields {
        let count =
            |object: &serde_json::Value, name: &str| object.get(name).and_then(serde_json::Value::as_u64);
        let cache_creation_split =
            value
                .get("cache_creation")
                .filter(|split| split.is_object())
                .map(|split| {
                    (
                        count(split, "ephemeral_5m_input_tokens").unwrap_or(0),
                        count(split, "ephemeral_1h_input_tokens").unwrap_or(0),
                    )
                });
        UsageFields {
            input_tokens: count(value, "input_tokens"),
            output_tokens: count(value, "output_tokens"),
            cache_read_input_tokens: count(value, "cache_read_input_tokens"),
            cache_creation_input_tokens: count(value, "cache_creation_input_tokens"),
            cache_creation_split,
            web_search_requests: value
                .get("server_tool_use")
                .and_then(|tools| count(tools, "web_search_requests")),
            speed: value
                .get("speed")
                .and_then(serde_json::Value::as_str)
                .and_then(Speed::parse),
            resident: value
                .get("inference_geo")
                .and_then(serde_json::Value::as_str)
                .map(Multipliers::is_residency_geo),
        }
    }
}

fn apply_usage_fields(usage: &mut TokenUsage, fields: &UsageFields) {
    if let Some(input_tokens) = fields.input_tokens {
        usage.input_tokens = input_tokens;
    }
    if let Some(output_tokens) = fields.output_tokens {
        usage.output_tokens = output_tokens;
    }
    if let Some(cache_read_input_tokens) = fields.cache_read_input_tokens {
        usage.cache_read_input_tokens = cache_read_input_tokens;
    }
    if let Some(web_search_requests) = fields.web_search_requests {
        usage.web_search_requests = web_search_requests;
    }
    if let Some(speed) = fields.speed {
        usage.speed = Some(speed);
    }
    if let Some(resident) = fields.resident {
        usage.resident = Some(resident);
    }
    if let Some((five_minute, one_hour)) = fields.cache_creation_split {
        usage.cache_creation_5m_input_tokens = five_minute;
        usage.cache_creation_1h_input_tokens = one_hour;
    } else if let Some(total) = fields.cache_creation_input_tokens {
        // A `message_delta` may repeat the total without the split; keep the split that
        // `message_start` gave unless the total actually changed.
        let known_total = usage
            .cache_creation_5m_input_tokens
            .saturating_add(usage.cache_creation_1h_input_tokens);
        if total != known_total {
            usage.cache_creation_5m_input_tokens = total;
            usage.cache_creation_1h_input_tokens = 0;
        }
    }
}

/// The event's kind: its name, or the data's `type` when the stream gave no name.
fn event_kind(event: &SseEvent) -> Option<String> {
    if !event.event.is_empty() && event.event != "message" {
        return Some(event.event.clone());
    }
    parse_data(event)?.get("type")?.as_str().map(str::to_owned)
}

fn parse_data(event: &SseEvent) -> Option<serde_json::Value> {
    serde_json::from_str(&event.data).ok()
}

/// A line longer than this is not SSE from any real provider; stop before it eats memory.
const LINE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The same bound for one event's data, which may span many lines.
const EVENT_DATA_BYTES_MAX: usize = 16 * 1024 * 1024;
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

struct ParseState<S> {
    bytes: std::pin::Pin<Box<S>>,
    decoder: SseDecoder,
    pending_error: Option<UpstreamError>,
    finished: bool,
}

/// The synchronous core of the parser: bytes in, complete events out into `ready`.
#[derive(Default)]
struct SseDecoder {
    /// Bytes not yet consumed as complete lines.
    buffer: Vec<u8>,
    /// `buffer[..scanned]` holds no line terminator, so the next search starts here.
    scanned: usize,
    /// Whether the byte-order mark check at the very start of the stream is done.
    past_start: bool,
    event_name: String,
    data: String,
    ready: VecDeque<SseEvent>,
}

impl SseDecoder {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), UpstreamError> {
        self.buffer.extend_from_slice(chunk);
        if !self.past_start {
            if self.buffer.len() < BYTE_ORDER_MARK.len() && BYTE_ORDER_MARK.starts_with(&self.buffer) {
                // Could still become a byte-order mark; decide once more bytes arrive.
                return Ok(());
            }
            if self.buffer.starts_with(BYTE_ORDER_MARK) {
                self.buffer.drain(..BYTE_ORDER_MARK.len());
            }
            self.past_start = true;
        }
        self.consume_lines(false)
    }

    /// The stream ended: a trailing `\r` terminates its line; any unfinished event is dropped.
    fn finish(&mut self) {
        // Errors only come from oversized lines, which are already caught by `feed`.
        let _ = self.consume_lines(true);
    }

    fn consume_lines(&mut self, at_end: bool) -> Result<(), UpstreamError> {
        let mut line_start = 0;
        let mut position = self.scanned;
        let result = loop {
            let Some(offset) = self.buffer[position..]
                .iter()
                .position(|byte| *byte == b'\n' || *byte == b'\r')
            else {
                position = self.buffer.len();
                if position - line_start > LINE_BYTES_MAX {
                    break Err(UpstreamError::Protocol(format!(
                        "event-stream line longer than {LINE_BYTES_MAX} bytes"
                    )));
                }
                break Ok(());
            };
            let terminator = position + offset;
            let terminator_len = if self.buffer[terminator] == b'\n' {
                1
            } else if terminator + 1 < self.buffer.len() {
                if self.buffer[terminator + 1] == b'\n' {
                    2
                } else {
                    1
                }
            } else if at_end {
                1
            } else {
                // A `\r` at the end of the chunk may be the first half of `\r\n`.
                position = terminator;
                break Ok(());
            };
            let line = String::from_utf8_lossy(&self.buffer[line_start..terminator]).into_owned();
            if let Err(error) = self.process_line(&line) {
                break Err(error);
            }
            line_start = terminator + terminator_len;
            position = line_start;
        };
        // Drop consumed lines once per chunk rather than once per line.
        self.buffer.drain(..line_start);
        self.scanned = position - line_start;
        result
    }

    fn process_line(&mut self, line: &str) -> Result<(), UpstreamError> {
        if line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => {
                self.event_name.clear();
                self.event_name.push_str(value);
            }
            "data" => {
                if self.data.len() + value.len() > EVENT_DATA_BYTES_MAX {
                    return Err(UpstreamError::Protocol(format!(
                        "event-stream event data longer than {EVENT_DATA_BYTES_MAX} bytes"
                    )));
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            // `id` and `retry` matter only to reconnecting browsers; unknown fields are ignored.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) {
        let event_name = std::mem::take(&mut self.event_name);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // The `\n` appended after the last data line.
        let event = if event_name.is_empty() {
            "message".to_owned()
        } else {
            event_name
        };
        self.ready.push_back(SseEvent { event, data });
    }
}

#[cfg(test)]
mod tests;
