use crate::attribution::{Attribution, ClientLabel};

#[test]
fn a_session_id_is_kept_as_sent() {
    let id = "5f0c1a9e-3b7d-4c2a-9e61-0a4b8c2d7e13";
    assert_eq!(
        ClientLabel::parse(id.as_bytes()).map(|label| label.as_str().to_owned()),
        Some(id.to_owned())
    );
}

#[test]
fn an_over_long_value_is_cut_at_the_bound() {
    let long = "a".repeat(ClientLabel::MAX_BYTES + 50);
    let label = ClientLabel::parse(long.as_bytes()).expect("kept");
    assert_eq!(label.as_str().len(), ClientLabel::MAX_BYTES);
    // A cut that ends in spaces leaves no trailing space behind.
    let spaced = format!("{} tail", "b".repeat(ClientLabel::MAX_BYTES - 1));
    assert_eq!(
        ClientLabel::parse(spaced.as_bytes()).expect("kept").as_str(),
        "b".repeat(ClientLabel::MAX_BYTES - 1)
    );
}

#[test]
fn malformed_or_empty_values_are_dropped() {
    for raw in [
        &b""[..],
        b"   ",
        b"tab\there",
        b"new\nline",
        "caf\u{e9}".as_bytes(),
        b"\x7f",
    ] {
        assert_eq!(ClientLabel::parse(raw), None, "{raw:?}");
    }
    assert_eq!(
        ClientLabel::parse(b"  padded  ").expect("kept").as_str(),
        "padded"
    );
}

#[test]
fn attribution_reads_the_three_headers_by_name() {
    let headers = [
        ("x-claude-code-session-id", &b"abc"[..]),
        ("x-claude-code-agent-id", b"agent-7"),
        ("x-claude-code-parent-agent-id", b"bad\x01value"),
    ];
    let attribution = Attribution::from_headers(|name| {
        headers
            .iter()
            .find(|(header, _)| *header == name)
            .map(|(_, value)| *value)
    });
    assert_eq!(
        attribution.session_id.as_ref().map(ClientLabel::as_str),
        Some("abc")
    );
    assert_eq!(
        attribution.agent_id.as_ref().map(ClientLabel::as_str),
        Some("agent-7")
    );
    assert_eq!(attribution.parent_agent_id, None);
    assert_eq!(Attribution::from_headers(|_| None), Attribution::default());
}
