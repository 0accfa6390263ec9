use proptest::prelude::*;

use super::*;

proptest! {
    #[test]
    fn sixteen_bytes_encode_as_by_long_division(bytes in any::<[u8; 16]>(), zeros in 0_usize..=16) {
        let mut bytes = bytes;
        bytes[..zeros].fill(0);
        prop_assert_eq!(base62_encode(&bytes), base62_by_long_division(&bytes));
    }

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
fn the_extremes_of_sixteen_bytes_encode_as_by_long_division() {
    for bytes in [
        [0_u8; 16],
        [255; 16],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 62],
    ] {
        assert_eq!(base62_encode(&bytes), base62_by_long_division(&bytes));
    }
    assert_eq!(base62_encode(&[0; 16]), "0");
}

#[test]
fn a_time_ordered_id_has_the_usual_shape() {
    let id = new_time_ordered_id(IdKind::Request, 1_795_000_000_000, [7; 10]);
    assert!(id.starts_with("req_01"));
    assert_eq!(id.len(), "req_01".len() + 22);
}
