use proptest::prelude::*;

use crate::keys::{KeyFormatError, KeyKind, WellFormedKey};

#[test]
fn generated_keys_parse_back() {
    let key = WellFormedKey::generate(KeyKind::Api, [7; 32]);
    assert!(key.expose_secret().starts_with("sk-tg-api01-"));
    assert_eq!(WellFormedKey::parse(key.expose_secret()), Ok(key.clone()));
    let admin = WellFormedKey::generate(KeyKind::Admin, [0; 32]);
    assert_eq!(
        WellFormedKey::parse(admin.expose_secret()).map(|key| key.kind()),
        Ok(KeyKind::Admin)
    );
    assert!(key.hint().starts_with("sk-tg-api01-") && key.hint().contains("..."));
    assert_eq!(key.hash().len(), 64);
}

#[test]
fn refuses_foreign_and_malformed_keys() {
    let key = WellFormedKey::generate(KeyKind::Api, [9; 32]);
    let secret = key.expose_secret();
    assert_eq!(
        WellFormedKey::parse("sk-ant-api03-abc").map(|_| ()),
        Err(KeyFormatError::UnknownPrefix)
    );
    assert_eq!(
        WellFormedKey::parse(&secret[..secret.len() - 1]).map(|_| ()),
        Err(KeyFormatError::Malformed)
    );
    assert_eq!(
        WellFormedKey::parse(&format!("{secret}-")).map(|_| ()),
        Err(KeyFormatError::Malformed)
    );
}

proptest! {
    /// Any single-character substitution is caught by the checksum (or the alphabet check).
    #[test]
    fn a_typo_is_caught(random in any::<[u8; 32]>(), position in 12_usize..61, replacement in "[0-9A-Za-z]") {
        let key = WellFormedKey::generate(KeyKind::Api, random);
        let mut secret: Vec<char> = key.expose_secret().chars().collect();
        let replacement = replacement.chars().next().expect("one char");
        prop_assume!(secret[position] != replacement);
        secret[position] = replacement;
        let typo: String = secret.into_iter().collect();
        prop_assert!(WellFormedKey::parse(&typo).is_err());
    }
}
