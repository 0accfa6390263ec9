use std::time::Duration;

use axum::http::Request;
use tokio::time::Instant;

use crate::serve::{RepeatedLog, head_bytes, head_too_large, open_files_limit};

#[test]
fn a_repeating_condition_is_logged_once_per_interval_with_the_count_left_out() {
    let start = Instant::now();
    let mut log = RepeatedLog::new(Duration::from_secs(10));
    assert_eq!(log.occurred(start), Some(0));
    // EMFILE every 100 ms for ten seconds: nothing more until the interval has passed.
    for step in 1..100 {
        assert_eq!(log.occurred(start + Duration::from_millis(100 * step)), None);
    }
    assert_eq!(log.occurred(start + Duration::from_secs(10)), Some(99));
    assert_eq!(log.occurred(start + Duration::from_secs(11)), None);
    assert_eq!(log.occurred(start + Duration::from_secs(30)), Some(1));
}

#[test]
fn a_head_is_measured_as_sent_and_refused_only_beyond_the_limit() {
    let request = Request::post("/v1/messages?beta=true")
        .header("x-api-key", "k")
        .body(())
        .expect("a request");
    // "POST /v1/messages?beta=true HTTP/1.1\r\n" and "x-api-key: k\r\n".
    assert_eq!(head_bytes(&request), 38 + 14);
    assert!(head_too_large(&request, 52).is_none());
    let refusal = head_too_large(&request, 51).expect("one byte over");
    assert_eq!(refusal.status(), 431);
    assert_eq!(refusal.headers()["content-type"], "application/json");
    assert!(refusal.headers().contains_key("request-id"));
}

#[test]
fn the_open_file_limit_is_read_from_proc_limits() {
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max processes             63704                63704                processes \n\
                  Max open files            1024                 524288               files     \n";
    assert_eq!(open_files_limit(limits), Some(1024));
    assert_eq!(
        open_files_limit("Max open files  unlimited  unlimited  files"),
        None
    );
    assert_eq!(open_files_limit(""), None);
}
