//! AWS's event-stream framing (`application/vnd.amazon.eventstream`), which Bedrock's
//! `InvokeModelWithResponseStream` answers in: an incremental decoder of frames from bytes
//! split anywhere, and the encoder of one frame (the test kit's fake Bedrock speaks it too).
//! It checks both CRCs of every frame and knows nothing of what the payloads mean.
//!
//! A frame is a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes, all
//! big-endian), the headers (each a 1-byte name length, the name, a 1-byte value type and
//! the value), the payload, and a CRC32 of everything before it.

use bytes::{Buf, Bytes, BytesMut};

use crate::UpstreamError;

/// The prelude (12 bytes) and the message CRC (4 bytes).
const FRAME_OVERHEAD_BYTES: usize = 16;
/// AWS caps a frame at 16 MiB; anything longer is not a frame from AWS.
const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The value type of a string header.
const HEADER_TYPE_STRING: u8 = 7;

/// One decoded frame: its string headers (headers of other types are skipped) and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

impl Frame {
    /// The value of string header `name` (e.g. `:event-type`), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    /// The frame on the wire, with both CRCs; every header is written as a string.
    pub fn encode(&self) -> Bytes {
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            // Names are at most 255 bytes and values 65,535 in the format; ours are short.
            headers.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
            headers.extend_from_slice(name.as_bytes());
            headers.push(HEADER_TYPE_STRING);
            headers.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
            headers.extend_from_slice(value.as_bytes());
        }
        let total = FRAME_OVERHEAD_BYTES + headers.len() + self.payload.len();
        let mut frame = Vec::with_capacity(total);
        frame.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
        frame.extend_from_slice(&u32::try_from(headers.len()).unwrap_or(u32::MAX).to_be_bytes());
        let prelude_crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&prelude_crc.to_be_bytes());
        frame.extend_from_slice(&headers);
        frame.extend_from_slice(&self.payload);
        let message_crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&message_crc.to_be_bytes());
        Bytes::from(frame)
    }
}

/// Bytes in, frames out, whatever the chunking. A damaged frame (a CRC that does not
/// match, impossible lengths) is a `Protocol` error, after which the stream is unusable:
/// the framing cannot be found again.
#[derive(Default)]
pub struct FrameDecoder {
    buffer: BytesMut,
}

impl FrameDecoder {
    /// Adds bytes as they arrive.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete frame, `None` until its last byte has been fed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, UpstreamError> {
        if self.buffer.len() < 12 {
            return Ok(None);
        }
        let total = read_length(&self.buffer[0..4]);
        let headers_len = read_length(&self.buffer[4..8]);
        let prelude_crc = read_u32(&self.buffer[8..12]);
        if crc32fast::hash(&self.buffer[0..8]) != prelude_crc {
            return Err(damaged("the prelude's CRC does not match"));
        }
        if total < FRAME_OVERHEAD_BYTES + headers_len || total > FRAME_BYTES_MAX {
            return Err(damaged("its lengths are impossible"));
        }
        if self.buffer.len() < total {
            return Ok(None);
        }
        let frame = self.buffer.split_to(total).freeze();
        let message_crc = read_u32(&frame[total - 4..]);
        if crc32fast::hash(&frame[..total - 4]) != message_crc {
            return Err(damaged("the message's CRC does not match"));
        }
        let headers = parse_headers(&frame[12..12 + headers_len])?;
        let payload = frame.slice(12 + headers_len..total - 4);
        Ok(Some(Frame { headers, payload }))
    }

    /// Bytes of a frame begun but not finished: what is lost if the stream ends now.
    pub fn pending_bytes(&self) -> usize {
        self.buffer.len()
    }
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut array = [0_u8; 4];
    array.copy_from_slice(bytes);
    u32::from_be_bytes(array)
}

fn read_length(bytes: &[u8]) -> usize {
    usize::try_from(read_u32(bytes)).unwrap_or(usize::MAX)
}

fn damaged(what: &str) -> UpstreamError {
    UpstreamError::Protocol(format!("event-stream frame damaged: {what}"))
}

/// The headers block: string headers kept, the other types' values skipped by their size.
fn parse_headers(mut block: &[u8]) -> Result<Vec<(String, String)>, UpstreamError> {
    let truncated = || damaged("a header runs past its block");
    let mut headers = Vec::new();
    while block.has_remaining() {
        let name_len = usize::from(block.get_u8());
        if block.remaining() < name_len + 1 {
            return Err(truncated());
        }
        let name = String::from_utf8_lossy(&block[..name_len]).into_owned();
        block.advance(name_len);
        let value_type = block.get_u8();
        let fixed = match value_type {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | HEADER_TYPE_STRING => None,
            _ => return Err(damaged("a header has an unknown value type")),
        };
        let value_len = match fixed {
            Some(len) => len,
            None => {
                if block.remaining() < 2 {
                    return Err(truncated());
                }
                usize::from(block.get_u16())
            }
        };
        if block.remaining() < value_len {
            return Err(truncated());
        }
        if value_type == HEADER_TYPE_STRING {
            headers.push((name, String::from_utf8_lossy(&block[..value_len]).into_owned()));
        }
        block.advance(value_len);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests;
