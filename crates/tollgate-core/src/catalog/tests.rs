use std::collections::HashSet;

use crate::catalog::{
    Alias, Catalog, CatalogError, Cooldowns, Deployment, Model, UpstreamAttempt, route_order, served_by,
};
use crate::money::NanoUsd;
use crate::pricing::{ModelPrices, Multipliers, PriceSchedule, TokenPrice};

fn model_prices(input: &str, output: &str) -> ModelPrices {
    let price = |text| TokenPrice::parse_usd_per_mtok(text).expect("price");
    ModelPrices::from_input_output(price(input), price(output))
}

fn prices(input: &str, output: &str) -> PriceSchedule {
    PriceSchedule::constant(model_prices(input, output))
}

fn deployment(provider: &str, upstream_model: &str, priority: u32, weight: u32) -> Deployment {
    Deployment {
        provider: provider.to_owned(),
        upstream_model: upstream_model.to_owned(),
        passes_requested_id: true,
        priority,
        weight,
        prices: prices("1", "1"),
        cooldown: chrono::Duration::seconds(30),
    }
}

fn model(id: &str, input: &str, output: &str) -> Model {
    Model {
        id: id.to_owned(),
        display_name: id.to_owned(),
        created_at: chrono::DateTime::UNIX_EPOCH,
        deployments: vec![Deployment {
            prices: prices(input, output),
            ..deployment("simulated", id, 0, 1)
        }],
        prices: prices(input, output),
        class: "test".to_owned(),
        default_max_tokens: 4_096,
        max_output_tokens: None,
        max_input_tokens: None,
        embeddings: false,
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
    let upstream = |name| {
        catalog.resolve(name).map(|resolved| {
            let first = &resolved.model.deployments[0];
            resolved.upstream_model(first).to_owned()
        })
    };
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
fn prefix_aliases_pass_the_client_id_only_to_deployments_that_take_it() {
    // Goal: a new Claude id reaches Anthropic as asked, while a failover deployment that
    // knows the model under another name gets that name.
    let mut sonnet = model("claude-sonnet-4-6", "3", "15");
    sonnet.deployments.push(Deployment {
        passes_requested_id: false,
        ..deployment("gateway-b", "anthropic/claude-sonnet-4.6", 1, 1)
    });
    let catalog =
        Catalog::new(vec![sonnet], vec![alias("claude-sonnet-4*", "claude-sonnet-4-6")]).expect("valid");
    let resolved = catalog.resolve("claude-sonnet-4-9").expect("resolves");
    let sent: Vec<&str> = resolved
        .model
        .deployments
        .iter()
        .map(|deployment| resolved.upstream_model(deployment))
        .collect();
    assert_eq!(sent, ["claude-sonnet-4-9", "anthropic/claude-sonnet-4.6"]);
}

#[test]
fn refuses_duplicates_dangling_aliases_and_unroutable_models() {
    let duplicate = Catalog::new(vec![model("a", "1", "1"), model("a", "1", "1")], vec![]);
    assert_eq!(duplicate, Err(CatalogError::DuplicateModel("a".to_owned())));
    let dangling = Catalog::new(vec![model("a", "1", "1")], vec![alias("b*", "c")]);
    assert!(matches!(dangling, Err(CatalogError::UnknownAliasTarget { .. })));
    let mut nowhere = model("a", "1", "1");
    nowhere.deployments.clear();
    assert_eq!(
        Catalog::new(vec![nowhere], vec![]),
        Err(CatalogError::NoDeployment("a".to_owned()))
    );
    let mut weightless = model("a", "1", "1");
    weightless.deployments[0].weight = 0;
    assert_eq!(
        Catalog::new(vec![weightless], vec![]),
        Err(CatalogError::ZeroWeight("a".to_owned()))
    );
}

#[test]
fn the_reservation_bound_covers_the_dearest_deployment() {
    // Goal: whichever deployment answers, its charge fits in the one reservation.
    let mut mixed = model("m", "3", "15");
    let per_call = ModelPrices {
        per_request: NanoUsd::from_nanos(5_000_000),
        per_image: NanoUsd::from_nanos(1_000_000),
        ..model_prices("1", "2")
    };
    mixed.deployments.push(Deployment {
        prices: PriceSchedule::constant(per_call),
        ..deployment("cheap-but-per-call", "m", 1, 1)
    });
    // Bounds price every input token at the dearest kind: 1-hour cache writes, 2 × input.
    let tokens_only = 1_000 * 6_000 + 100 * 15_000;
    let per_call_bound = 1_000 * 2_000 + 100 * 2_000 + 5_000_000 + 2 * 1_000_000;
    assert!(per_call_bound > tokens_only);
    assert_eq!(
        mixed.cost_bound(
            1_000,
            100,
            2,
            chrono::DateTime::UNIX_EPOCH,
            Multipliers::default()
        ),
        NanoUsd::from_nanos(per_call_bound)
    );
    assert_eq!(
        mixed.cost_bound(
            1_000,
            100,
            0,
            chrono::DateTime::UNIX_EPOCH,
            Multipliers::default()
        ),
        NanoUsd::from_nanos(tokens_only),
        "with no images the token-priced deployment is the dearer"
    );
}

#[test]
fn routing_tries_priorities_in_order_and_cooling_deployments_last() {
    let deployments = vec![
        deployment("backup", "m", 1, 1),
        deployment("primary", "m", 0, 1),
        deployment("last-resort", "m", 2, 1),
    ];
    for random in 0..50 {
        assert_eq!(route_order(&deployments, |_| false, random), [1, 0, 2]);
        assert_eq!(
            route_order(
                &deployments,
                |deployment| deployment.provider == "primary",
                random
            ),
            [0, 2, 1],
            "a cooling deployment is tried after every healthy one"
        );
    }
    let all_cooling = route_order(&deployments, |_| true, 7);
    assert_eq!(
        all_cooling,
        [1, 0, 2],
        "all cooling: still every one, by priority"
    );
}

#[test]
fn routing_spreads_equal_priorities_by_weight() {
    let deployments = vec![deployment("heavy", "m", 0, 3), deployment("light", "m", 0, 1)];
    let draws = 4_000_u64;
    let heavy_first = (0..draws)
        .filter(|random| route_order(&deployments, |_| false, random.wrapping_mul(0x9e37_79b9)) == [0, 1])
        .count();
    // Expected 3,000 of 4,000; the bound is loose enough never to flake with this seed set.
    assert!(
        (2_800..=3_200).contains(&heavy_first),
        "heavy first {heavy_first} times of {draws}"
    );
    for random in 0..100 {
        let mut order = route_order(&deployments, |_| false, random);
        order.sort_unstable();
        assert_eq!(order, [0, 1], "every deployment appears exactly once");
    }
}

#[test]
fn cooldowns_pass_a_failed_deployment_over_until_they_end() {
    let start = chrono::DateTime::UNIX_EPOCH;
    let primary = deployment("primary", "m", 0, 1);
    let same_place_other_model = deployment("primary", "m", 5, 9);
    let mut cooldowns = Cooldowns::default();
    assert!(!cooldowns.is_cooling(&primary, start));
    cooldowns.record_failure(&primary, start);
    assert!(cooldowns.is_cooling(&primary, start + chrono::Duration::seconds(29)));
    assert!(
        cooldowns.is_cooling(&same_place_other_model, start),
        "health belongs to the provider and upstream model, not to one catalogue entry"
    );
    assert!(!cooldowns.is_cooling(&primary, start + chrono::Duration::seconds(30)));
    cooldowns.record_failure(&primary, start);
    cooldowns.record_success(&primary);
    assert!(!cooldowns.is_cooling(&primary, start), "a success ends it early");
    let no_cooldown = Deployment {
        cooldown: chrono::Duration::zero(),
        ..primary
    };
    cooldowns.record_failure(&no_cooldown, start);
    assert!(!cooldowns.is_cooling(&no_cooldown, start));
}

#[test]
fn a_deployment_is_down_from_its_first_failure_until_it_answers_again() {
    // #17: the span one `deployment_down` alert covers: one crossing however many failures
    // and cooldowns follow, and a new one only after a success.
    let start = chrono::DateTime::UNIX_EPOCH;
    let primary = deployment("primary", "m", 0, 1);
    let other = deployment("backup", "m", 0, 1);
    let mut cooldowns = Cooldowns::default();
    assert!(!cooldowns.record_success(&primary), "up already");
    assert!(cooldowns.record_failure(&primary, start), "went down");
    assert!(!cooldowns.record_failure(&primary, start), "still down");
    let later = start + chrono::Duration::seconds(60);
    assert!(!cooldowns.is_cooling(&primary, later));
    assert!(
        !cooldowns.record_failure(&primary, later),
        "down across cooldowns"
    );
    assert!(
        cooldowns.record_failure(&other, later),
        "each deployment on its own"
    );
    assert!(cooldowns.record_success(&primary), "back up");
    assert!(!cooldowns.record_success(&primary));
    assert!(cooldowns.record_failure(&primary, later), "a new crossing");
    let no_cooldown = Deployment {
        cooldown: chrono::Duration::zero(),
        ..deployment("elsewhere", "m", 0, 1)
    };
    assert!(
        !cooldowns.record_failure(&no_cooldown, start),
        "never passed over"
    );
}

#[test]
fn a_deployment_another_process_alerted_as_down_is_down_here_until_it_answers() {
    // #17: the standing claims replace what this process knew: a success of a claimed
    // deployment re-arms its alert here, and one whose claim is gone goes down afresh.
    let start = chrono::DateTime::UNIX_EPOCH;
    let primary = deployment("primary", "m", 0, 1);
    let other = deployment("backup", "m", 0, 1);
    let mut cooldowns = Cooldowns::default();
    assert!(cooldowns.record_failure(&other, start), "down here");
    cooldowns.set_down(HashSet::from([primary.key()]));
    assert!(!cooldowns.is_cooling(&primary, start), "no cooldown is invented");
    assert!(cooldowns.is_cooling(&other, start), "cooldowns are kept");
    assert!(
        !cooldowns.record_failure(&primary, start),
        "down already, elsewhere"
    );
    assert!(cooldowns.record_success(&primary), "came back: re-arm");
    assert!(
        cooldowns.record_failure(&other, start),
        "re-armed elsewhere: a new crossing"
    );
}

#[test]
fn the_models_a_deployment_serves() {
    let shared = deployment("primary", "upstream-a", 0, 1);
    let mut first = model("first", "3", "15");
    first.deployments = vec![shared.clone(), deployment("backup", "upstream-a", 1, 1)];
    let mut second = model("second", "3", "15");
    second.deployments = vec![shared.clone()];
    let third = model("third", "3", "15");
    let catalog = Catalog::new(vec![first, second, third], Vec::new()).expect("catalogue");
    assert_eq!(catalog.models_served_by(&shared.key()), vec!["first", "second"]);
    assert!(
        catalog
            .models_served_by(&deployment("nowhere", "x", 0, 1).key())
            .is_empty()
    );
}

#[test]
fn a_server_side_fallback_is_billed_at_the_model_that_served() {
    // #18: billed at the served model's prices when the catalogue knows it, else at the
    // routed deployment's; a dated id of the routed model is the routed model.
    let catalog = Catalog::new(
        vec![model("big", "15", "75"), model("small", "3", "15")],
        vec![Alias {
            pattern: "big-*".to_owned(),
            target: "big".to_owned(),
        }],
    )
    .expect("catalogue");
    let at = chrono::DateTime::UNIX_EPOCH;
    assert_eq!(
        catalog.served_prices("big", "small", at),
        Some(&model_prices("3", "15"))
    );
    assert_eq!(catalog.served_prices("big", "big-20260101", at), None);
    assert_eq!(catalog.served_prices("big", "big", at), None);
    assert_eq!(catalog.served_prices("big", "unknown-model", at), None);
    // A model whose deployment asks its provider for another catalogue model's id: a reply
    // naming that id is what was asked for, billed at the routed model's own prices.
    let mut proxy = model("proxy", "6", "30");
    proxy.deployments[0].upstream_model = "small".to_owned();
    let catalog = Catalog::new(vec![proxy, model("small", "3", "15")], Vec::new()).expect("catalogue");
    assert_eq!(catalog.served_prices("proxy", "small", at), None);
}

#[test]
fn the_deployment_that_served_a_request_is_its_last_attempt_unless_that_failed() {
    let attempt = |deployment: &str, error: Option<&str>| UpstreamAttempt {
        deployment: deployment.to_owned(),
        error: error.map(str::to_owned),
    };
    assert_eq!(deployment("primary", "m", 0, 1).key().label(), "primary/m");
    assert_eq!(served_by(&[]), None, "no upstream was called");
    assert_eq!(
        served_by(&[
            attempt("primary/m", Some("overloaded (529)")),
            attempt("backup/m", None)
        ]),
        Some("backup/m")
    );
    assert_eq!(
        served_by(&[attempt("primary/m", None), attempt("backup/m", Some("timeout"))]),
        None,
        "every one tried failed"
    );
}
