use std::sync::Arc;

use crate::concurrency::InFlight;

#[test]
fn an_organization_at_its_limit_is_refused_and_others_are_not() {
    let in_flight = Arc::new(InFlight::new(2));
    let first = in_flight.try_take("org_a").expect("one of two");
    let second = in_flight.try_take("org_a").expect("two of two");
    assert_eq!(in_flight.try_take("org_a").err(), Some(2));
    let other = in_flight
        .try_take("org_b")
        .expect("another organization has its own count");
    drop(first);
    let third = in_flight.try_take("org_a").expect("a slot was freed");
    drop((second, third, other));
    assert_eq!(in_flight.count("org_a"), 0);
    assert_eq!(in_flight.count("org_b"), 0);
}

#[test]
fn a_lowered_limit_applies_to_the_next_call() {
    let in_flight = Arc::new(InFlight::new(10));
    let _held = in_flight.try_take("org_a").expect("room");
    in_flight.set_limit(1);
    assert_eq!(in_flight.try_take("org_a").err(), Some(1));
}
