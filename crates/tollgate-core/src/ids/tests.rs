use proptest::prelude::*;

use super::*;

proptest! {
    #[test]
    fn time_ordered_ids_sort_by_time_then_randomness(
        first in 0_u64..(1 << 48),
        second in 0_u64..(1 << 48),
        random_first in any::<[u8; 10]>(),
        random_second in any::<[u8; 10]>(),
    ) {
        let a = new_time_ordered_id(IdKind::Reservation, first, random_first);
        let b = new_time_ordered_id(IdKind::Reservation, second, random_second);
        prop_assert_eq!(a.len(), b.len());
        prop_assert!(is_well_formed(IdKind::Reservation, &a));
        prop_assert_eq!(a.cmp(&b), (first, random_first).cmp(&(second, random_second)));
    }
}

#[test]
fn a_time_ordered_id_has_the_usual_shape() {
    let id = new_time_ordered_id(IdKind::Request, 1_795_000_000_000, [7; 10]);
    assert!(id.starts_with("req_01"));
    assert_eq!(id.len(), "req_01".len() + 22);
}
