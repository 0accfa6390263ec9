//! Redaction paths and the size cap, without a database.

use serde_json::json;
use tollgate_store::CaptureSettings;

use crate::capture::{CapturePolicy, REDACTED, RedactPath, WITHHELD};

fn policy(paths: &[&str], body_bytes_max: u64) -> CapturePolicy {
    CapturePolicy::new(CaptureSettings {
        retention_days: 7,
        body_bytes_max,
        redact_paths: paths.iter().map(|path| (*path).to_owned()).collect(),
    })
    .expect("valid settings")
}

#[test]
fn the_documented_paths_redact_what_they_name_and_nothing_else() {
    let policy = policy(
        &["system", "messages[*].content", "metadata.user_id", "tools[1]"],
        1 << 20,
    );
    let body = json!({
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "secret system"}],
        "messages": [{"role": "user", "content": "secret one"}, {"role": "assistant", "content": [{"type": "text", "text": "secret two"}]}],
        "metadata": {"user_id": "secret user", "other": "kept"},
        "tools": [{"name": "kept"}, {"name": "secret tool"}],
    });
    let captured = policy.json_body(body.to_string().as_bytes());
    let value: serde_json::Value = serde_json::from_str(&captured.text).expect("JSON");
    assert_eq!(value["system"], REDACTED);
    assert_eq!(value["messages"][0]["content"], REDACTED);
    assert_eq!(value["messages"][1]["content"], REDACTED);
    assert_eq!(value["messages"][0]["role"], "user");
    assert_eq!(value["metadata"]["user_id"], REDACTED);
    assert_eq!(value["metadata"]["other"], "kept");
    assert_eq!(value["tools"][0]["name"], "kept");
    assert_eq!(value["tools"][1], REDACTED);
    assert!(!captured.text.contains("secret"), "{}", captured.text);
    assert!(!captured.truncated);
}

#[test]
fn a_body_over_the_cap_is_cut_on_a_character_boundary_and_marked() {
    let policy = policy(&[], 5);
    let captured = policy.json_body("\"ééé\"".as_bytes());
    assert_eq!(captured.text, "\"éé");
    assert_eq!(captured.bytes, 8);
    assert!(captured.truncated);
    let mut stream = policy.stream();
    stream.push("abc", 3);
    stream.push("def", 3);
    assert!(stream.is_full());
    stream.count(4);
    let captured = stream.finish();
    assert_eq!(
        (captured.text.as_str(), captured.bytes, captured.truncated),
        ("abcde", 10, true)
    );
}

#[test]
fn a_body_that_is_not_json_is_withheld_when_paths_are_set_and_kept_when_not() {
    assert_eq!(policy(&["system"], 100).redact_text("not json"), WITHHELD);
    assert_eq!(policy(&[], 100).redact_text("not json"), "not json");
}

#[test]
fn malformed_paths_and_settings_are_refused() {
    for bad in ["", "a..b", "a[", "a[x]", "a]b", "a b", ".a", "a."] {
        assert!(RedactPath::parse(bad).is_err(), "{bad:?}");
    }
    for good in ["a", "a.b", "a[*]", "a[0].b[*].c", "[*].text", "$schema"] {
        assert!(RedactPath::parse(good).is_ok(), "{good:?}");
    }
    let settings = |retention_days, body_bytes_max| CaptureSettings {
        retention_days,
        body_bytes_max,
        redact_paths: Vec::new(),
    };
    assert!(CapturePolicy::new(settings(0, 10)).is_err());
    assert!(CapturePolicy::new(settings(3_651, 10)).is_err());
    assert!(CapturePolicy::new(settings(1, 0)).is_err());
}
