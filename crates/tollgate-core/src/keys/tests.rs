use proptest::prelude::*;

use crate::catalog::{Alias, Catalog, Deployment, Model};
use crate::keys::{AllowedModels, AllowedModelsError, KeyFormatError, KeyKind, WellFormedKey};
use crate::pricing::{ModelPrices, PriceSchedule, TokenPrice};

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

fn catalog() -> Catalog {
    let price = |text| TokenPrice::parse_usd_per_mtok(text).expect("price");
    let prices = PriceSchedule::constant(ModelPrices::from_input_output(price("1"), price("1")));
    let model = |id: &str| Model {
        id: id.to_owned(),
        display_name: id.to_owned(),
        created_at: chrono::DateTime::UNIX_EPOCH,
        deployments: vec![Deployment {
            provider: "simulated".to_owned(),
            upstream_model: id.to_owned(),
            passes_requested_id: true,
            priority: 0,
            weight: 1,
            prices: prices.clone(),
            cooldown: chrono::Duration::seconds(30),
        }],
        prices: prices.clone(),
        class: "test".to_owned(),
        default_max_tokens: 4_096,
        max_output_tokens: None,
        max_input_tokens: None,
        embeddings: false,
    };
    let alias = |pattern: &str, target: &str| Alias {
        pattern: pattern.to_owned(),
        target: target.to_owned(),
    };
    Catalog::new(
        vec![
            model("claude-sonnet-4-6"),
            model("claude-haiku-4-5"),
            model("gpt-4o"),
        ],
        vec![
            alias("sonnet", "claude-sonnet-4-6"),
            alias("claude-sonnet-4-6-*", "claude-sonnet-4-6"),
        ],
    )
    .expect("catalogue")
}

/// The model a request's `model` names, as the gateway resolves it before asking.
fn resolved(catalog: &Catalog, requested: &str) -> String {
    catalog.resolve(requested).expect("known").model.id.clone()
}

#[test]
fn an_empty_list_allows_every_model() {
    let catalog = catalog();
    let allowed = AllowedModels::parse::<&str>(&[], &catalog).expect("parsed");
    assert!(allowed.allows_all());
    assert_eq!(allowed, AllowedModels::all());
    for model in ["claude-sonnet-4-6", "gpt-4o", "sonnet"] {
        assert!(allowed.allows(&catalog, &resolved(&catalog, model)));
    }
}

#[test]
fn a_listed_model_is_allowed_by_its_id_and_every_alias_and_no_other_is() {
    let catalog = catalog();
    let allowed = AllowedModels::parse(&["claude-sonnet-4-6"], &catalog).expect("parsed");
    for requested in ["claude-sonnet-4-6", "sonnet", "claude-sonnet-4-6-20260101"] {
        assert!(
            allowed.allows(&catalog, &resolved(&catalog, requested)),
            "{requested}"
        );
    }
    for requested in ["claude-haiku-4-5", "gpt-4o"] {
        assert!(
            !allowed.allows(&catalog, &resolved(&catalog, requested)),
            "{requested}"
        );
    }
}

#[test]
fn a_listed_alias_stands_for_the_model_it_resolves_to() {
    let catalog = catalog();
    let allowed = AllowedModels::parse(&[" sonnet ", "gpt-4o", "sonnet"], &catalog).expect("parsed");
    assert_eq!(
        allowed.entries(),
        ["sonnet", "gpt-4o"],
        "trimmed, duplicates dropped"
    );
    assert!(allowed.allows(&catalog, "claude-sonnet-4-6"));
    assert!(allowed.allows(&catalog, "gpt-4o"));
    assert!(!allowed.allows(&catalog, "claude-haiku-4-5"));
}

#[test]
fn a_stored_entry_the_catalogue_no_longer_knows_allows_nothing() {
    let catalog = catalog();
    let allowed = AllowedModels::from_stored(vec!["claude-opus-3".to_owned()]);
    assert!(!allowed.allows_all());
    for model in ["claude-sonnet-4-6", "claude-haiku-4-5", "gpt-4o"] {
        assert!(!allowed.allows(&catalog, model), "{model}");
    }
}

#[test]
fn malformed_unknown_and_too_many_entries_are_refused() {
    let catalog = catalog();
    assert_eq!(
        AllowedModels::parse(&["gpt-4o, sonnet"], &catalog),
        Err(AllowedModelsError::Malformed("gpt-4o, sonnet".to_owned()))
    );
    assert_eq!(
        AllowedModels::parse(&[""], &catalog),
        Err(AllowedModelsError::Malformed(String::new()))
    );
    assert_eq!(
        AllowedModels::parse(&["claude-opus-9"], &catalog),
        Err(AllowedModelsError::UnknownModel("claude-opus-9".to_owned()))
    );
    let many = vec!["gpt-4o"; AllowedModels::ENTRIES_MAX + 1];
    assert_eq!(
        AllowedModels::parse(&many, &catalog),
        Err(AllowedModelsError::TooMany)
    );
}
