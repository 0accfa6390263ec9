use std::collections::HashMap;

use tollgate_core::money::NanoUsd;
use tollgate_core::pricing::TokenPrice;

use crate::config::{Backend, Config, Overrides};

/// An instant at which to read the prices in force.
fn today() -> tollgate_core::Timestamp {
    chrono::DateTime::parse_from_rfc3339("2026-12-03T00:00:00Z")
        .expect("instant")
        .to_utc()
}

fn parse(file: Option<&str>, environment: &[(&str, &str)]) -> anyhow::Result<Config> {
    let environment: HashMap<String, String> = environment
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    Config::parse(file, &environment, &Overrides::default())
}

#[test]
fn defaults_carry_the_contract_prices() {
    // Pinned to contract §2: a change to the defaults must be deliberate.
    let config = parse(None, &[]).expect("defaults parse");
    let catalog = config.catalog().expect("catalogue");
    let per_mtok = |id: &str| {
        let prices = catalog.model(id).expect("model").prices.at(today()).clone();
        [
            prices.input,
            prices.output,
            prices.cache_write_5m,
            prices.cache_write_1h,
            prices.cache_read,
        ]
        .map(|price| price.per_mtok().to_usd_decimal())
    };
    assert_eq!(
        per_mtok("claude-opus-4-6"),
        ["5.00", "25.00", "6.25", "10.00", "0.50"]
    );
    assert_eq!(
        per_mtok("claude-sonnet-4-6"),
        ["3.00", "15.00", "3.75", "6.00", "0.30"]
    );
    assert_eq!(
        per_mtok("claude-haiku-4-5"),
        ["1.00", "5.00", "1.25", "2.00", "0.10"]
    );
    assert_eq!(
        per_mtok("claude-3-5-haiku")[..2],
        ["0.80".to_owned(), "4.00".to_owned()]
    );
    // Anthropic's pricing page as of 2026-12-03: the current lineup, each price dated.
    assert_eq!(
        per_mtok("claude-fable-5-2"),
        ["8.00", "40.00", "10.00", "16.00", "0.20"]
    );
    assert_eq!(
        per_mtok("claude-opus-5-5"),
        ["4.00", "20.00", "5.00", "8.00", "0.20"]
    );
    assert_eq!(
        per_mtok("claude-sonnet-5-5"),
        ["2.00", "10.00", "2.50", "4.00", "0.10"],
        "cache reads halved on 2026-10-07"
    );
    let sonnet_5_5 = &catalog.model("claude-sonnet-5-5").expect("model").prices;
    let before_the_cut = chrono::DateTime::parse_from_rfc3339("2026-10-06T23:00:00Z")
        .expect("instant")
        .to_utc();
    assert_eq!(
        sonnet_5_5.at(before_the_cut).cache_read,
        TokenPrice::parse_usd_per_mtok("0.20").expect("price")
    );
    assert_eq!(
        per_mtok("claude-haiku-5-5"),
        ["0.10", "0.50", "0.125", "0.20", "0.01"]
    );
    let haiku_5_5 = catalog
        .model("claude-haiku-5-5")
        .expect("model")
        .prices
        .at(today())
        .clone();
    assert_eq!(haiku_5_5.cache_write_5m.nanos_per_token(), 125);
    assert_eq!(haiku_5_5.prompt_tiers.len(), 1);
    assert_eq!(haiku_5_5.rates(100_001).output.nanos_per_token(), 2_500);
    for (id, fast) in [
        ("claude-fable-5-2", Some(2)),
        ("claude-opus-5-5", Some(2)),
        ("claude-opus-5", Some(2)),
        ("claude-sonnet-5-5", None),
        ("claude-opus-4-6", None),
    ] {
        let prices = catalog.model(id).expect("model").prices.at(today()).clone();
        assert_eq!(
            prices.fast_multiplier,
            fast.map(|factor| tollgate_core::pricing::Multiplier::new(factor, 1)),
            "{id}"
        );
        assert_eq!(prices.web_search_per_thousand, NanoUsd::from_usd(10), "{id}");
    }
    assert_eq!(config.starter_grant().expect("grant"), NanoUsd::from_usd(5));
    assert_eq!(
        catalog
            .resolve("claude-opus-4-8")
            .map(|resolved| resolved.model.id.clone()),
        Some("claude-opus-4-6".into())
    );
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn defaults_carry_the_contract_tier_ladder() {
    // Pinned to contract §3 and §4.
    let policy = parse(None, &[])
        .expect("defaults parse")
        .billing_policy()
        .expect("policy");
    let optional =
        |amount: Option<NanoUsd>| amount.map_or("none".to_owned(), |amount| amount.to_usd_decimal());
    let rows: Vec<String> = policy
        .ladder
        .tiers()
        .iter()
        .map(|tier| {
            let sonnet = tier.limits.rate_limits["sonnet"];
            let haiku = tier.limits.rate_limits["haiku"];
            format!(
                "{} from {}: cap {}, max purchase {}, sonnet {}/{}/{}, haiku itpm {}",
                tier.limits.name,
                tier.cumulative_purchases_min.to_usd_decimal(),
                optional(tier.limits.monthly_spend_limit),
                optional(tier.limits.max_single_purchase),
                sonnet.requests_per_minute,
                sonnet.input_tokens_per_minute,
                sonnet.output_tokens_per_minute,
                haiku.input_tokens_per_minute,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            "Evaluation from 0.00: cap 10.00, max purchase 100.00, sonnet 50/30000/8000, haiku itpm 50000",
            "Tier 1 from 5.00: cap 100.00, max purchase 100.00, sonnet 50/30000/8000, haiku itpm 50000",
            "Tier 2 from 40.00: cap 500.00, max purchase 500.00, sonnet 1000/450000/90000, haiku itpm 450000",
            "Tier 3 from 200.00: cap 1000.00, max purchase 1000.00, sonnet 2000/800000/160000, haiku itpm 1000000",
            "Tier 4 from 400.00: cap 200000.00, max purchase 200000.00, sonnet 4000/2000000/400000, haiku itpm 4000000",
        ]
    );
    let count_tokens: Vec<u64> = policy
        .ladder
        .tiers()
        .iter()
        .map(|tier| tier.limits.count_tokens_requests_per_minute)
        .collect();
    assert_eq!(count_tokens, vec![100, 100, 2_000, 4_000, 8_000]);
    assert_eq!(
        policy.programmes.get("startup").map(String::as_str),
        Some("startup")
    );
}

#[test]
fn file_then_environment_override_the_defaults() {
    let file = r#"
        listen = "0.0.0.0:9000"
        [models.claude-haiku-4-5]
        output = "6"
        [models.my-model]
        class = "sonnet"
        provider = "simulated"
        input = "0.40"
        output = "2"
    "#;
    let config = parse(
        Some(file),
        &[
            ("TOLLGATE_LISTEN", "127.0.0.1:9999"),
            ("TOLLGATE_PROVIDERS__SIMULATED__TOKENS_PER_SECOND", "0"),
            ("OTHER", "x"),
        ],
    )
    .expect("valid layers");
    assert_eq!(config.listen.to_string(), "127.0.0.1:9999");
    let catalog = config.catalog().expect("catalogue");
    let haiku = catalog
        .model("claude-haiku-4-5")
        .expect("kept")
        .prices
        .at(today())
        .clone();
    assert_eq!(haiku.output, TokenPrice::parse_usd_per_mtok("6").expect("price"));
    assert_eq!(
        haiku.input,
        TokenPrice::parse_usd_per_mtok("1").expect("price"),
        "unchanged keys survive the merge"
    );
    assert!(catalog.model("my-model").is_some());
}

#[test]
fn bad_configuration_names_the_culprit() {
    let cases = [
        (
            "[models.x]\nclass = \"sonnet\"\nprovider = \"nowhere\"\ninput = \"1\"\noutput = \"1\"",
            "provider 'nowhere'",
        ),
        (
            "[models.x]\nclass = \"sonnet\"\nprovider = \"simulated\"\ninput = \"1.0001\"\noutput = \"1\"",
            "models.x.input",
        ),
        ("[credits]\nstarter_grant_usd = \"-5\"", "must not be negative"),
        ("listen = 12", "invalid"),
        ("unknown_key = 1", "invalid"),
        (
            "[models.x]\nclass = \"sonnet\"\nprovider = \"simulated\"\ninput = \"1\"\noutput = \"1\"\nweb_search_per_thousand = \"-1\"",
            "models.x.web_search_per_thousand",
        ),
        ("[aliases]\n\"a*\" = \"missing\"", "catalogue"),
        (
            "[models.x]\nclass = \"mystery\"\nprovider = \"simulated\"\ninput = \"1\"\noutput = \"1\"",
            "model class 'mystery'",
        ),
        (
            "[[tiers]]\nname = \"Only\"\ncumulative_purchases_usd = \"5\"\ncount_tokens_requests_per_minute = 1\nrate_limits.opus = { requests_per_minute = 1, input_tokens_per_minute = 1, output_tokens_per_minute = 1 }\nrate_limits.sonnet = { requests_per_minute = 1, input_tokens_per_minute = 1, output_tokens_per_minute = 1 }\nrate_limits.haiku = { requests_per_minute = 1, input_tokens_per_minute = 1, output_tokens_per_minute = 1 }",
            "must need no purchases",
        ),
        ("[programmes.x]\nlimit_set = \"nope\"", "limit set 'nope'"),
    ];
    for (file, expected) in cases {
        let error = format!("{:#}", parse(Some(file), &[]).expect_err(file));
        assert!(error.contains(expected), "{file}: {error}");
    }
}

#[test]
fn the_example_configuration_parses() {
    let example = include_str!("../../../../tollgate.example.toml");
    let config = parse(Some(example), &[]).expect("the shipped example is valid");
    let catalog = config.catalog().expect("catalogue");
    let house = catalog.resolve("house").expect("alias resolves");
    assert_eq!(
        house.upstream_model(&house.model.deployments[0]),
        "claude-sonnet-4-6"
    );
    let routed = catalog.model("gpt-4.1").expect("an OpenAI-compatible model");
    assert_eq!(routed.deployments.len(), 2, "a primary and a failover deployment");
    let clouds = catalog.model("claude-sonnet-4-5").expect("a model on two clouds");
    let providers: Vec<&str> = clouds
        .deployments
        .iter()
        .map(|deployment| deployment.provider.as_str())
        .collect();
    assert_eq!(providers, ["bedrock", "vertex"], "Bedrock, then Vertex AI");
    // No model is left to the simulated one: a real setup serves what it configures (#23).
    for model in catalog.models() {
        for deployment in &model.deployments {
            assert_ne!(deployment.provider, "simulated", "{} is simulated", model.id);
        }
    }
    assert!(
        catalog.model("claude-opus-4-1").is_none(),
        "a default model stays out"
    );
    let newer = catalog
        .resolve("claude-opus-4-8")
        .expect("a newer id resolves by prefix");
    assert_eq!(
        newer.upstream_model(&newer.model.deployments[0]),
        "claude-opus-4-8"
    );
}

/// The built-in catalogue is a default, not a floor (#23): `default_models = false`, in a
/// file or the environment, leaves only the models configured; without it they stay.
#[test]
fn default_models_false_serves_only_the_configured_models() {
    let file = r#"
        default_models = false
        [models.mine]
        class = "sonnet"
        provider = "simulated"
        input = "3"
        output = "15"
        max_output_tokens = 1000
    "#;
    let catalog = parse(Some(file), &[])
        .expect("valid")
        .catalog()
        .expect("catalogue");
    let ids: Vec<&str> = catalog.models().iter().map(|model| model.id.as_str()).collect();
    assert_eq!(ids, ["mine"]);
    assert_eq!(catalog.models()[0].max_output_tokens, Some(1000));
    assert!(
        catalog.resolve("claude-sonnet-4-7").is_none(),
        "the default aliases go too"
    );

    let kept = parse(Some(&file.replace("default_models = false", "")), &[])
        .expect("valid")
        .catalog()
        .expect("catalogue");
    assert!(kept.model("claude-sonnet-4-6").is_some());
    assert_eq!(
        kept.model("claude-sonnet-4-6")
            .and_then(|model| model.max_output_tokens),
        Some(64_000)
    );

    let from_environment = parse(
        Some(&file.replace("default_models = false", "")),
        &[("TOLLGATE_DEFAULT_MODELS", "false")],
    )
    .expect("valid")
    .catalog()
    .expect("catalogue");
    assert_eq!(from_environment.models().len(), 1);
}

#[test]
fn deployments_inherit_prices_key_by_key_and_route_by_priority() {
    let file = r#"
        [providers.backup]
        kind = "openai"
        base_url = "http://127.0.0.1:9/v1"
        cooldown_seconds = 5
        [models.routed]
        class = "sonnet"
        input = "3"
        output = "15"
        per_image = "0.004"
        default_max_tokens = 1000
        [[models.routed.deployments]]
        provider = "simulated"
        [[models.routed.deployments]]
        provider = "backup"
        upstream_model = "gpt-4o"
        priority = 1
        weight = 3
        input = "2"
        per_request = "0.001"
    "#;
    let config = parse(Some(file), &[]).expect("valid");
    let catalog = config.catalog().expect("catalogue");
    let model = catalog.model("routed").expect("model");
    assert_eq!(model.default_max_tokens, 1000);
    let [primary, backup] = &model.deployments[..] else {
        panic!("two deployments");
    };
    assert_eq!(
        (
            primary.provider.as_str(),
            primary.upstream_model.as_str(),
            primary.priority
        ),
        ("simulated", "routed", 0)
    );
    assert!(
        primary.passes_requested_id,
        "no upstream_model: a prefix alias passes its id"
    );
    assert_eq!(primary.prices, model.prices, "no overrides: the model's prices");
    assert_eq!(
        (backup.upstream_model.as_str(), backup.priority, backup.weight),
        ("gpt-4o", 1, 3)
    );
    assert!(!backup.passes_requested_id);
    assert_eq!(backup.cooldown, chrono::Duration::seconds(5));
    let price = |text| TokenPrice::parse_usd_per_mtok(text).expect("price");
    let backup_prices = backup.prices.at(today());
    assert_eq!(backup_prices.input, price("2"));
    assert_eq!(
        backup_prices.cache_read,
        price("0.20"),
        "cache prices follow the overridden input"
    );
    assert_eq!(backup_prices.output, price("15"), "output is inherited");
    assert_eq!(backup_prices.per_request, NanoUsd::from_nanos(1_000_000));
    assert_eq!(
        backup_prices.per_image,
        NanoUsd::from_nanos(4_000_000),
        "unit prices are inherited"
    );
}

#[test]
fn bad_deployments_name_the_culprit() {
    let model = |rest: &str| format!("[models.x]\nclass = \"sonnet\"\ninput = \"1\"\noutput = \"1\"\n{rest}");
    let cases = [
        (model(""), "give a `provider`"),
        (
            model("provider = \"simulated\"\n[[models.x.deployments]]\nprovider = \"simulated\""),
            "not both",
        ),
        (
            model("[[models.x.deployments]]\nprovider = \"gone\""),
            "provider 'gone'",
        ),
        (
            model("[[models.x.deployments]]\nprovider = \"simulated\"\nweight = 0"),
            "weight 0",
        ),
        (
            model("[[models.x.deployments]]\nprovider = \"simulated\"\ninput = \"0.0001\""),
            "models.x.deployments[0].input",
        ),
        (
            model("provider = \"simulated\"\nper_request = \"-1\""),
            "models.x.per_request",
        ),
        (
            "[providers.o]\nkind = \"openai\"\nbase_url = \"http://x/v1\"\nmax_tokens_field = \"limit\""
                .to_owned(),
            "max_tokens_field",
        ),
        (
            "[providers.a]\nkind = \"anthropic\"\nbase_url = \"https://x\"\nca_file = \"/nonexistent/ca.pem\""
                .to_owned(),
            "providers.a.ca_file: cannot read /nonexistent/ca.pem",
        ),
        (
            format!(
                "[providers.a]\nkind = \"anthropic\"\nbase_url = \"https://x\"\nca_file = \"{}/Cargo.toml\"",
                env!("CARGO_MANIFEST_DIR")
            ),
            "the CA certificates: no PEM certificate found",
        ),
    ];
    for (file, expected) in cases {
        let result = parse(Some(&file), &[]).and_then(|config| config.providers().map(|_| config));
        let error = format!("{:#}", result.expect_err(&file));
        assert!(error.contains(expected), "{file}: {error}");
    }
}

#[test]
fn a_reservation_ttl_the_heartbeat_cannot_keep_ahead_of_is_refused() {
    // #24: running requests' reservations are extended at every maintenance pass, so the TTL
    // must exceed two passes; the defaults (900 s, 10 s) pass.
    parse(None, &[])
        .expect("defaults")
        .check_reservation_ttl()
        .expect("defaults are safe");
    let config = parse(
        Some("[gateway]\nreservation_ttl_seconds = 20\nmaintenance_interval_seconds = 10\n"),
        &[],
    )
    .expect("parses");
    let error = config.check_reservation_ttl().expect_err("refused").to_string();
    assert!(
        error.contains("reservation_ttl_seconds (20)") && error.contains("maintenance_interval_seconds (10)"),
        "{error}"
    );
    let config = parse(
        Some("[gateway]\nreservation_ttl_seconds = 21\nmaintenance_interval_seconds = 10\n"),
        &[],
    )
    .expect("parses");
    config.check_reservation_ttl().expect("just enough");
}

#[test]
fn explicit_cache_prices_win_and_derived_ones_round_up() {
    // #18: $0.15 input derives a 5-minute write of 187.5 nanos per token, which was refused
    // even when every cache price was set; a derived price now rounds up (188).
    let model = |cache: &str| {
        format!(
            "default_models = false\n[models.mini]\nclass = \"sonnet\"\nprovider = \"simulated\"\ninput = \"0.15\"\noutput = \"0.6\"\n{cache}"
        )
    };
    let price = |text| TokenPrice::parse_usd_per_mtok(text).expect("price");
    let cache_prices = |cache: &str| {
        let file = model(cache);
        let catalog = parse(Some(&file), &[])
            .expect(&file)
            .catalog()
            .expect("catalogue");
        let prices = catalog.model("mini").expect("model").prices.at(today()).clone();
        [prices.cache_write_5m, prices.cache_write_1h, prices.cache_read]
    };
    assert_eq!(
        cache_prices("cache_write_5m = \"0.19\"\ncache_write_1h = \"0.31\"\ncache_read = \"0.075\""),
        [price("0.19"), price("0.31"), price("0.075")],
        "the explicit prices win"
    );
    assert_eq!(
        cache_prices("cache_write_5m = \"0.19\""),
        [price("0.19"), price("0.30"), price("0.015")],
        "the unset ones are derived (2x and 0.1x input are whole nanos)"
    );
    assert_eq!(
        cache_prices(""),
        [price("0.188"), price("0.30"), price("0.015")],
        "1.25 x 150 nanos = 187.5, billed 188"
    );
}

#[test]
fn a_model_without_a_price_refuses_to_load() {
    // #18: a model with no price would be served for free.
    let file = "default_models = false\n[models.free]\nclass = \"sonnet\"\nprovider = \"simulated\"\noutput = \"1\"\n";
    let error = format!("{:#}", parse(Some(file), &[]).expect_err("refused"));
    assert!(
        error.contains("models.free has no price: set `input` and `output`"),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1, "one line: {error}");
    assert_eq!(error.matches("has no price").count(), 1, "said once: {error}");
}

#[test]
fn an_embeddings_model_needs_only_an_input_price_and_a_provider_that_embeds() {
    // #20: embeddings generate no output, so `output` may be left out; a provider kind with
    // no embeddings endpoint cannot serve one.
    let catalog = parse(None, &[]).expect("defaults").catalog().expect("catalogue");
    let small = catalog.model("text-embedding-3-small").expect("built in");
    assert!(small.embeddings);
    let prices = small.prices.at(today());
    assert_eq!(prices.input.nanos_per_token(), 20, "$0.02 per million tokens");
    assert_eq!(prices.output.nanos_per_token(), 0);
    assert!(!catalog.model("claude-sonnet-4-6").expect("model").embeddings);

    let on = |kind: &str| {
        format!(
            "default_models = false\n[providers.p]\nkind = \"{kind}\"\nbase_url = \"http://127.0.0.1:1/v1\"\n[models.e]\nclass = \"haiku\"\nprovider = \"p\"\nembeddings = true\ninput = \"0.13\"\n"
        )
    };
    parse(Some(&on("openai")), &[]).expect("an openai provider embeds");
    parse(Some(&on("gemini")), &[]).expect("a gemini provider embeds");
    let error = format!("{:#}", parse(Some(&on("anthropic")), &[]).expect_err("refused"));
    assert!(error.contains("serves no embeddings"), "{error}");
}

#[test]
fn price_changes_tiers_fast_mode_and_web_search_load_into_a_schedule() {
    let file = r#"
default_models = false
[models.m]
class = "sonnet"
provider = "simulated"
input = "2"
output = "10"
fast_multiplier = "2"
web_search_per_thousand = "10"

[[models.m.long_context]]
above_input_tokens = 200000
input = "4"
output = "15"

[[models.m.price_changes]]
from = "2026-10-07"
cache_read = "0.10"

[[models.m.price_changes]]
from = "2026-11-01T12:00:00Z"
input = "3"
"#;
    let config = parse(Some(file), &[]).expect("parses");
    let catalog = config.catalog().expect("catalogue");
    let schedule = &catalog.model("m").expect("model").prices;
    let at = |text: &str| {
        let instant = chrono::DateTime::parse_from_rfc3339(text)
            .expect("instant")
            .to_utc();
        schedule.at(instant).clone()
    };
    let price = |text| TokenPrice::parse_usd_per_mtok(text).expect("price");
    let first = at("2026-10-06T23:00:00Z");
    assert_eq!(
        first.cache_read,
        price("0.20"),
        "derived from input before the change"
    );
    assert_eq!(
        first.fast_multiplier,
        Some(tollgate_core::pricing::Multiplier::new(2, 1))
    );
    assert_eq!(first.web_search_per_thousand, NanoUsd::from_usd(10));
    assert_eq!(first.prompt_tiers.len(), 1);
    assert_eq!(first.prompt_tiers[0].above_prompt_tokens, 200_000);
    assert_eq!(first.prompt_tiers[0].cache_read, None, "unset: the base rate");
    let second = at("2026-10-07T00:00:00Z");
    assert_eq!((second.input, second.cache_read), (price("2"), price("0.10")));
    assert_eq!(
        second.prompt_tiers, first.prompt_tiers,
        "what a change does not set carries over"
    );
    let third = at("2026-11-01T12:00:00Z");
    assert_eq!(
        (third.input, third.cache_read, third.cache_write_5m),
        (price("3"), price("0.30"), price("3.75")),
        "setting input re-derives every cache price the change does not set, as on a deployment"
    );
    for (bad, culprit) in [
        (
            file.replace("2026-11-01T12:00:00Z", "2026-11-01T12:30:00Z"),
            "not a whole UTC hour",
        ),
        (file.replace("2026-11-01T12:00:00Z", "2026-10-01"), "out of order"),
        (file.replace("2026-10-07", "October"), "price_changes[0].from"),
        (
            file.replace("fast_multiplier = \"2\"", "fast_multiplier = \"0\""),
            "fast_multiplier",
        ),
        (
            file.replace(
                "above_input_tokens = 200000\ninput = \"4\"",
                "above_input_tokens = 200000\ninput = \"x\"",
            ),
            "long_context[0].input",
        ),
    ] {
        let error = format!("{:#}", parse(Some(&bad), &[]).expect_err(culprit));
        assert!(error.contains(culprit), "{culprit}: {error}");
        assert_eq!(error.lines().count(), 1, "one line: {error}");
    }
}

#[test]
fn the_variable_naming_the_config_file_is_not_a_key() {
    // `TOLLGATE_CONFIG` is `--config` by another name: the command line reads it.
    let config = parse(None, &[("TOLLGATE_CONFIG", "/etc/tollgate.toml")]).expect("it is not read as a key");
    assert_eq!(config.database.sync_interval_millis, 100);
    let config = parse(None, &[("TOLLGATE_DATABASE__SYNC_INTERVAL_MILLIS", "0")]).unwrap();
    assert_eq!(config.database.sync_interval_millis, 0);
    assert!(
        matches!(config.backend().unwrap(), Backend::Sqlite(_)),
        "an interval is a SQLite setting and needs no URL"
    );
}

#[test]
fn the_consoles_forms_may_lead_to_stripe_checkout_only_under_stripe() {
    let settings = |file: &str| {
        parse(Some(file), &[])
            .and_then(|config| config.console_settings())
            .map(|settings| settings.payment_page_origin)
    };
    assert_eq!(settings("").expect("the test provider"), None);
    let stripe = "[payments]\nprovider = \"stripe\"\n[payments.stripe]\nsecret_key = \"sk_test_1\"\nwebhook_secret = \"whsec_1\"\n";
    assert_eq!(
        settings(stripe).expect("stripe").as_deref(),
        Some("https://checkout.stripe.com")
    );
    assert_eq!(
        settings(&format!(
            "{stripe}checkout_origin = \"https://pay.example.com/\"\n"
        ))
        .expect("a custom domain")
        .as_deref(),
        Some("https://pay.example.com")
    );
    for bad in ["https://x 'unsafe-inline'", "", "checkout.stripe.com"] {
        let error = settings(&format!("{stripe}checkout_origin = \"{bad}\"\n")).expect_err("not an origin");
        assert!(
            format!("{error:#}").contains("payments.stripe.checkout_origin"),
            "{bad}: {error:#}"
        );
    }
}

#[test]
fn anthropic_providers_take_message_batches_upstream_unless_set_local() {
    // Only `anthropic` providers have a Batches API of their own; "local" keeps them here.
    let config = parse(
        Some(
            r#"
            [providers.upstream]
            kind = "anthropic"
            base_url = "https://api.anthropic.com"
            [providers.here]
            kind = "anthropic"
            base_url = "https://api.anthropic.com"
            batches = "local"
            [providers.compatible]
            kind = "openai"
            base_url = "http://127.0.0.1:8000/v1"
            "#,
        ),
        &[],
    )
    .expect("config parses");
    let mut providers: Vec<String> = config.gateway_settings().batch_providers.into_iter().collect();
    providers.sort();
    assert_eq!(providers, ["upstream"]);
    let refused = parse(
        Some(
            r#"
            [providers.typo]
            kind = "anthropic"
            base_url = "https://api.anthropic.com"
            batches = "remote"
            "#,
        ),
        &[],
    );
    assert!(refused.is_err(), "an unknown batches value is refused");
}

#[test]
fn an_smtp_ca_file_without_a_certificate_stops_the_start() {
    let directory = tempfile::tempdir().expect("directory");
    let not_pem = directory.path().join("relay-ca.pem");
    std::fs::write(&not_pem, "no certificate here\n").expect("written");
    let file = format!(
        "[alerts]\nsmtp_host = \"relay.example\"\nsmtp_security = \"starttls\"\nsmtp_ca_file = \"{}\"\n",
        not_pem.display()
    );
    let error = parse(Some(&file), &[])
        .expect("parses")
        .alerting_settings()
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("smtp_ca_file") && error.contains("no PEM certificate"),
        "{error}"
    );
    let missing = file.replace("relay-ca.pem", "absent.pem");
    let error = parse(Some(&missing), &[])
        .expect("parses")
        .alerting_settings()
        .expect_err("refused")
        .to_string();
    assert!(error.contains("cannot read"), "{error}");
    let trusted = format!(
        "[alerts]\nsmtp_host = \"relay.example\"\nsmtp_security = \"starttls\"\nsmtp_ca_file = \"{}\"\n",
        tollgate_testkit::TEST_CA_PEM_PATH
    );
    let settings = parse(Some(&trusted), &[])
        .expect("parses")
        .alerting_settings()
        .expect("accepted");
    assert!(settings.smtp.is_some_and(|smtp| smtp.extra_roots.is_some()));
}

#[test]
fn single_sign_on_loads_its_group_map_and_names_each_bad_key() {
    let sso = "[console.sso]\nissuer = \"https://id.example.com\"\nclient_id = \"tollgate\"\nclient_secret = \"s\"\nallowed_email_domains = [\"@Example.COM\"]\n[console.sso.groups.\"eng\"]\nrole = \"developer\"\nworkspaces = { \"Default\" = \"workspace_developer\" }\n";
    let settings = parse(Some(sso), &[])
        .expect("parses")
        .console
        .sso
        .settings()
        .expect("valid")
        .expect("on");
    assert_eq!(settings.allowed_email_domains, vec!["example.com".to_owned()]);
    assert_eq!(
        settings.groups.grants["eng"].workspace_roles["Default"],
        tollgate_core::roles::WorkspaceRole::Developer
    );
    assert!(settings.password_sign_in, "passwords stay unless turned off");
    assert_eq!(settings.recheck_minutes, 15, "groups re-checked every 15 minutes");
    assert!(
        parse(None, &[])
            .expect("defaults")
            .console
            .sso
            .settings()
            .expect("valid")
            .is_none(),
        "off by default"
    );
    for (change, culprit) in [
        ("role = \"developer\"", "role = \"owner\""),
        ("\"workspace_developer\"", "\"developer\""),
        ("client_secret = \"s\"", "client_secret = \"\""),
        ("client_id = \"tollgate\"", "client_id = \"\""),
        (
            "client_id = \"tollgate\"",
            "client_id = \"tollgate\"\nrecheck_minutes = -1",
        ),
        (
            "issuer = \"https://id.example.com\"",
            "issuer = \"id.example.com\"",
        ),
    ] {
        let file = sso.replace(change, culprit);
        let error = parse(Some(&file), &[]).expect_err(culprit);
        assert!(
            format!("{error:#}").contains("console.sso."),
            "{culprit}: {error:#}"
        );
    }
    let error = parse(Some("[console.sso]\npassword_sign_in = false\n"), &[]).expect_err("no way in");
    assert!(format!("{error:#}").contains("console.sso.issuer"), "{error:#}");
    let no_groups = sso
        .split("[console.sso.groups")
        .next()
        .unwrap_or_default()
        .to_owned();
    let error = parse(Some(&no_groups), &[]).expect_err("no group");
    assert!(format!("{error:#}").contains("console.sso.groups"), "{error:#}");
}

#[test]
fn a_gemini_provider_defaults_to_google_s_endpoint_and_key_variable() {
    let file = "[providers.g]\nkind = \"gemini\"";
    let providers = parse(Some(file), &[("GEMINI_API_KEY", "AIzaFromTheEnvironment")])
        .expect("parses")
        .providers()
        .expect("builds");
    let described = format!("{:?}", providers["g"]);
    assert!(
        described.contains("https://generativelanguage.googleapis.com/v1beta/models"),
        "{described}"
    );
    assert!(
        !described.contains("AIza"),
        "the key stays out of logs: {described}"
    );
    // The variable is read: a key that cannot be sent fails the build.
    let error = parse(Some(file), &[("GEMINI_API_KEY", "not\na header")])
        .expect("parses")
        .providers()
        .expect_err("an unsendable key");
    assert!(
        format!("{error:#}").contains(
            "providers.g: could not reach the upstream: the upstream API key is not a valid header value"
        ),
        "{error:#}"
    );
    let configured = format!("{file}\napi_key = \"AIzaConfigured\"");
    parse(Some(&configured), &[("GEMINI_API_KEY", "not\na header")])
        .expect("parses")
        .providers()
        .expect("the configured key wins over the variable");
}

#[test]
fn workers_leave_sqlites_writer_a_core_unless_told() {
    let sqlite = parse(None, &[]).expect("defaults");
    assert_eq!(
        [1, 2, 8].map(|cores| sqlite.worker_threads(cores)),
        [1, 1, 7],
        "one a core less the writer's, at least one"
    );
    let postgres = parse(None, &[("TOLLGATE_DATABASE__URL", "postgres://db/tollgate")]).expect("postgres");
    assert_eq!([1, 2, 8].map(|cores| postgres.worker_threads(cores)), [1, 2, 8]);
    let told = parse(Some("[server]\nworker_threads = 3"), &[]).expect("told");
    assert_eq!(told.worker_threads(2), 3);
}
