use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::{Breaker, FAILURES_TO_OPEN, Passage};

const RETRY_AFTER: Duration = Duration::from_secs(1);

#[test]
fn failures_below_the_threshold_keep_it_closed_and_a_success_resets_the_count() {
    let now = Instant::now();
    let mut breaker = Breaker::new(RETRY_AFTER);
    for _ in 1..FAILURES_TO_OPEN {
        breaker.failed(now);
        assert_eq!(breaker.request(now), Passage::Through);
    }
    breaker.succeeded();
    for _ in 1..FAILURES_TO_OPEN {
        breaker.failed(now);
    }
    assert_eq!(breaker.request(now), Passage::Through);
}

#[test]
fn an_open_breaker_refuses_then_lets_one_probe_through() {
    let start = Instant::now();
    let mut breaker = Breaker::new(RETRY_AFTER);
    for _ in 0..FAILURES_TO_OPEN {
        breaker.failed(start);
    }
    assert_eq!(breaker.request(start), Passage::Refused(RETRY_AFTER));
    let later = start + Duration::from_millis(400);
    assert_eq!(
        breaker.request(later),
        Passage::Refused(Duration::from_millis(600))
    );
    // The period is over: one probe, and the others are still refused meanwhile.
    let after = start + RETRY_AFTER;
    assert_eq!(breaker.request(after), Passage::Through);
    assert_eq!(breaker.request(after), Passage::Refused(RETRY_AFTER));
    // The probe fails: open again for a whole period.
    let probe_failed = after + Duration::from_millis(100);
    breaker.failed(probe_failed);
    assert_eq!(breaker.request(probe_failed), Passage::Refused(RETRY_AFTER));
    // The next probe answers: closed, everyone goes through.
    let next = probe_failed + RETRY_AFTER;
    assert_eq!(breaker.request(next), Passage::Through);
    breaker.succeeded();
    assert_eq!(breaker.request(next), Passage::Through);
    assert_eq!(breaker.request(next), Passage::Through);
}
