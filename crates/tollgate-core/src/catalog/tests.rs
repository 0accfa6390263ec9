use crate::catalog::{Alias, Catalog, CatalogError, Model};
use crate::pricing::{ModelPrices, TokenPrice};

fn model(id: &str, input: &str, output: &str) -> Model {
    let price = |text| TokenPrice::parse_usd_per_mtok(text).expect("price");
    Model {
        id: id.to_owned(),
        display_name: id.to_owned(),
        created_at: chrono::DateTime::UNIX_EPOCH,
        provider: "simulated".to_owned(),
        upstream_model: id.to_owned(),
        prices: ModelPrices::from_input_output(price(input), price(output)).expect("exact"),
        class: "test".to_owned(),
    }
}

fn alias(pattern: &str, target: &str) -> Alias {
    Alias {
        pattern: pattern.to_owned(),
        target: target.to_owned(),
    }
}

#[test]
fn resolves_exact_then_exact_alias_then_longest_prefix() {
    let catalog = Catalog::new(
        vec![
            model("claude-opus-4-6", "5", "25"),
            model("claude-opus-4-1", "15", "75"),
        ],
        vec![
            alias("claude-opus-4*", "claude-opus-4-6"),
            alias("claude-opus-4-1-*", "claude-opus-4-1"),
            alias("opus", "claude-opus-4-6"),
        ],
    )
    .expect("valid catalogue");
    let resolve = |name| catalog.resolve(name).map(|resolved| resolved.model.id.clone());
    assert_eq!(resolve("claude-opus-4-1"), Some("claude-opus-4-1".to_owned()));
    assert_eq!(resolve("claude-opus-4-8"), Some("claude-opus-4-6".to_owned()));
    assert_eq!(
        resolve("claude-opus-4-1-20250805"),
        Some("claude-opus-4-1".to_owned())
    );
    assert_eq!(resolve("opus"), Some("claude-opus-4-6".to_owned()));
    assert_eq!(resolve("gpt-4o"), None);
    let upstream = |name| catalog.resolve(name).map(|resolved| resolved.upstream_model);
    assert_eq!(
        upstream("claude-opus-4-8"),
        Some("claude-opus-4-8".to_owned()),
        "new ids go upstream as asked"
    );
    assert_eq!(
        upstream("opus"),
        Some("claude-opus-4-6".to_owned()),
        "exact aliases send the target"
    );
}

#[test]
fn refuses_duplicates_and_dangling_aliases() {
    let duplicate = Catalog::new(vec![model("a", "1", "1"), model("a", "1", "1")], vec![]);
    assert_eq!(duplicate, Err(CatalogError::DuplicateModel("a".to_owned())));
    let dangling = Catalog::new(vec![model("a", "1", "1")], vec![alias("b*", "c")]);
    assert!(matches!(dangling, Err(CatalogError::UnknownAliasTarget { .. })));
}
