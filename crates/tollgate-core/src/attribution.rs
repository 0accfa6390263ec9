//! Who a request is attributed to beyond its key, as the client says: Claude Code sends
//! its session id (`x-claude-code-session-id`) with every request, and the agent and
//! parent agent ids (`x-claude-code-agent-id`, `x-claude-code-parent-agent-id`) when a
//! subagent makes it. These are labels for reports, never identities: an agent id is not
//! a user and grants nothing.
//!
//! A label is bounded before it is kept, and a bad one is never a reason to refuse a
//! request: surrounding spaces are trimmed, a value longer than [`ClientLabel::MAX_BYTES`]
//! is cut there, and a value holding anything but printable ASCII (or nothing at all) is
//! dropped. The header itself still goes upstream as the client sent it.

/// The headers Claude Code attributes its requests with (HTTP header names are
/// case-insensitive; it writes the session's as `X-Claude-Code-Session-Id`).
pub const SESSION_ID_HEADER: &str = "x-claude-code-session-id";
pub const AGENT_ID_HEADER: &str = "x-claude-code-agent-id";
pub const PARENT_AGENT_ID_HEADER: &str = "x-claude-code-parent-agent-id";

/// A client-supplied label: 1 to [`ClientLabel::MAX_BYTES`] bytes of printable ASCII
/// (space to `~`), with no space at either end.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientLabel(Box<str>);

impl ClientLabel {
    /// Claude Code's session ids are UUIDs (36 bytes) and its agent ids are shorter;
    /// this leaves room for other clients' ids without letting a header fill a row.
    pub const MAX_BYTES: usize = 128;

    /// The bounded label of a header's raw bytes, or `None` if it has none to keep.
    pub fn parse(raw: &[u8]) -> Option<ClientLabel> {
        if !raw.iter().all(|byte| (0x20..=0x7e).contains(byte)) {
            return None;
        }
        // Printable ASCII, so every byte is a char boundary.
        let text = std::str::from_utf8(raw).ok()?.trim();
        let cut = text[..text.len().min(ClientLabel::MAX_BYTES)].trim_end();
        (!cut.is_empty()).then(|| ClientLabel(cut.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClientLabel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// What a request's client said about where it came from; every part is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    pub session_id: Option<ClientLabel>,
    pub agent_id: Option<ClientLabel>,
    pub parent_agent_id: Option<ClientLabel>,
}

impl Attribution {
    /// The attribution of a request from its headers' raw values, looked up by name
    /// (`header` returns the value of a header name given in lower case).
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a [u8]>) -> Attribution {
        let label = |name: &str| header(name).and_then(ClientLabel::parse);
        Attribution {
            session_id: label(SESSION_ID_HEADER),
            agent_id: label(AGENT_ID_HEADER),
            parent_agent_id: label(PARENT_AGENT_ID_HEADER),
        }
    }
}

#[cfg(test)]
mod tests;
