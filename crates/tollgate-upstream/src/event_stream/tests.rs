//! Tests for the event-stream decoder: frames split anywhere, several frames in one chunk,
//! headers of every type, and damaged frames refused.

use bytes::Bytes;

use crate::UpstreamError;
use crate::event_stream::{Frame, FrameDecoder};

fn chunk_frame(payload: &str) -> Frame {
    Frame {
        headers: vec![
            (":event-type".to_owned(), "chunk".to_owned()),
            (":content-type".to_owned(), "application/json".to_owned()),
            (":message-type".to_owned(), "event".to_owned()),
        ],
        payload: Bytes::from(payload.to_owned()),
    }
}

fn decode_all(decoder: &mut FrameDecoder) -> Result<Vec<Frame>, UpstreamError> {
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame()? {
        frames.push(frame);
    }
    Ok(frames)
}

#[test]
fn a_frame_round_trips_and_its_layout_is_aws_s() {
    let frame = chunk_frame(r#"{"bytes":"e30="}"#);
    let wire = frame.encode();
    // Prelude: total length and headers length, big-endian.
    let headers_len = (1 + 11 + 1 + 2 + 5) + (1 + 13 + 1 + 2 + 16) + (1 + 13 + 1 + 2 + 5);
    assert_eq!(
        &wire[4..8],
        &u32::try_from(headers_len).expect("small").to_be_bytes()
    );
    assert_eq!(wire.len(), 16 + headers_len + frame.payload.len());
    assert_eq!(
        &wire[0..4],
        &u32::try_from(wire.len()).expect("small").to_be_bytes()
    );
    let mut decoder = FrameDecoder::default();
    decoder.feed(&wire);
    assert_eq!(decode_all(&mut decoder).expect("intact"), vec![frame.clone()]);
    assert_eq!(frame.header(":event-type"), Some("chunk"));
    assert_eq!(decoder.pending_bytes(), 0);
}

#[test]
fn frames_split_at_every_byte_and_joined_in_one_chunk_decode_alike() {
    let frames = vec![chunk_frame("first"), chunk_frame(""), chunk_frame("third frame")];
    let wire: Vec<u8> = frames.iter().flat_map(|frame| frame.encode().to_vec()).collect();

    let mut whole = FrameDecoder::default();
    whole.feed(&wire);
    assert_eq!(decode_all(&mut whole).expect("intact"), frames);

    let mut byte_by_byte = FrameDecoder::default();
    let mut decoded = Vec::new();
    for byte in &wire {
        byte_by_byte.feed(std::slice::from_ref(byte));
        decoded.extend(decode_all(&mut byte_by_byte).expect("intact"));
    }
    assert_eq!(decoded, frames);

    for split in 0..wire.len() {
        let mut decoder = FrameDecoder::default();
        decoder.feed(&wire[..split]);
        let mut decoded = decode_all(&mut decoder).expect("intact");
        decoder.feed(&wire[split..]);
        decoded.extend(decode_all(&mut decoder).expect("intact"));
        assert_eq!(decoded, frames, "split at {split}");
    }
}

#[test]
fn a_frame_cut_short_waits_for_the_rest() {
    let wire = chunk_frame("payload").encode();
    let mut decoder = FrameDecoder::default();
    decoder.feed(&wire[..wire.len() - 1]);
    assert_eq!(decoder.next_frame().expect("intact so far"), None);
    assert_eq!(decoder.pending_bytes(), wire.len() - 1);
}

#[test]
fn a_damaged_payload_fails_the_message_crc() {
    let mut wire = chunk_frame("payload").encode().to_vec();
    let last_payload_byte = wire.len() - 5;
    wire[last_payload_byte] ^= 0x01;
    let mut decoder = FrameDecoder::default();
    decoder.feed(&wire);
    let error = decoder.next_frame().expect_err("the CRC catches it");
    assert!(error.to_string().contains("message's CRC"), "{error}");
}

#[test]
fn a_damaged_prelude_fails_before_its_length_is_trusted() {
    let mut wire = chunk_frame("payload").encode().to_vec();
    // A length that would make the decoder wait for gigabytes, were it believed.
    wire[0] = 0x7f;
    let mut decoder = FrameDecoder::default();
    decoder.feed(&wire[..12]);
    let error = decoder.next_frame().expect_err("the prelude CRC catches it");
    assert!(error.to_string().contains("prelude's CRC"), "{error}");
}

#[test]
fn headers_of_other_types_are_skipped_by_their_size() {
    // A bool (type 0), an int32 (type 4), a byte array (type 6) and a string (type 7).
    let mut headers = Vec::new();
    headers.extend_from_slice(&[1, b'a', 0]);
    headers.extend_from_slice(&[1, b'b', 4, 0, 0, 0, 42]);
    headers.extend_from_slice(&[1, b'c', 6, 0, 2, 0xff, 0xfe]);
    headers.extend_from_slice(&[1, b'd', 7, 0, 2, b'o', b'k']);
    let total = 16 + headers.len();
    let mut wire = Vec::new();
    wire.extend_from_slice(&u32::try_from(total).expect("small").to_be_bytes());
    wire.extend_from_slice(&u32::try_from(headers.len()).expect("small").to_be_bytes());
    let prelude_crc = crc32fast::hash(&wire);
    wire.extend_from_slice(&prelude_crc.to_be_bytes());
    wire.extend_from_slice(&headers);
    let message_crc = crc32fast::hash(&wire);
    wire.extend_from_slice(&message_crc.to_be_bytes());
    let mut decoder = FrameDecoder::default();
    decoder.feed(&wire);
    let frame = decoder.next_frame().expect("intact").expect("complete");
    assert_eq!(frame.headers, vec![("d".to_owned(), "ok".to_owned())]);
    assert!(frame.payload.is_empty());
}

/// AWS's own test vector (aws-c-event-stream): one `content-type` header and the payload
/// `{'foo':'bar'}`. Decoding it and encoding the result must give the same bytes.
#[test]
fn aws_s_test_vector_decodes_and_encodes_to_the_same_bytes() {
    let hex = "0000003d0000002007fd83960c636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e7b27666f6f273a27626172277d8d9c08b1";
    let wire: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&hex[index..index + 2], 16).expect("hex"))
        .collect();
    let mut decoder = FrameDecoder::default();
    decoder.feed(&wire);
    let frame = decoder.next_frame().expect("intact").expect("complete");
    assert_eq!(frame.header("content-type"), Some("application/json"));
    assert_eq!(frame.payload, Bytes::from_static(b"{'foo':'bar'}"));
    assert_eq!(frame.encode().to_vec(), wire);
}
