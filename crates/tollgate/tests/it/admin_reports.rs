//! Usage and cost reports against the ledger: requests spread over days, models and
//! workspaces, then the cost report summed over the window must equal the ledger's settled
//! charges to the nano-dollar, however it is grouped, paged or exported; the usage report
//! must count every charged token once.

use chrono::Duration;
use serde_json::{Value, json};
use tollgate_core::money::NanoUsd;
use tollgate_core::reports::BucketWidth;
use tollgate_service::UsageStatus;

use crate::helpers::{Options, TestApp, message_body, spawn_app_with};

/// A cost amount in cents ("123.4567891") as exact nano-USD.
fn cents_to_nanos(text: &str) -> i64 {
    let as_dollars = NanoUsd::parse_usd(text).expect("a decimal amount");
    assert_eq!(as_dollars.nanos() % 100, 0, "{text} is finer than a nano-dollar");
    as_dollars.nanos() / 100
}

async fn post_with_key(app: &TestApp, key: &str, model: &str, max_tokens: u64) {
    let mut body = message_body(model);
    body["max_tokens"] = json!(max_tokens);
    post_body(app, key, &body).await;
}

/// Posts `body` to `/v1/messages` with `key`; it must succeed.
async fn post_body(app: &TestApp, key: &str, body: &Value) {
    let response = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", key)
        .json(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

fn sum_costs(report: &Value) -> i64 {
    report["data"]
        .as_array()
        .expect("buckets")
        .iter()
        .flat_map(|bucket| bucket["results"].as_array().expect("results").clone())
        .map(|result| cents_to_nanos(result["amount"].as_str().expect("amount")))
        .sum()
}

#[tokio::test]
async fn the_cost_report_sums_to_the_ledgers_settled_charges_to_the_nano_dollar() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        starter_grant_usd: "100.00",
        ..Options::default()
    })
    .await;
    let clock = app.clock.clone().expect("manual clock");
    let start = BucketWidth::Day.snap(app.tollgate.now());
    clock.set(start + Duration::hours(1));

    let (_, workspace) = app
        .admin_post("/v1/organizations/workspaces", json!({"name": "Reports"}))
        .await;
    let workspace_id = workspace["id"].as_str().expect("id").to_owned();
    let (_, key) = app
        .admin_post(
            "/v1/organizations/api_keys",
            json!({"name": "r", "workspace_id": workspace_id}),
        )
        .await;
    let workspace_key = key["api_key_secret"].as_str().expect("secret").to_owned();

    // Three days of traffic: two models, two workspaces, the simulated provider and the
    // fake Anthropic upstream, several requests a day at different hours.
    for day in 0..3 {
        for (hour, (key, model, max_tokens)) in [
            (app.api_key.as_str(), "claude-sonnet-4-6", 40),
            (workspace_key.as_str(), "claude-haiku-4-5", 25),
            (workspace_key.as_str(), "fake-sonnet", 60),
            (app.api_key.as_str(), "claude-opus-4-6", 10),
        ]
        .into_iter()
        .enumerate()
        {
            clock.set(
                start + Duration::days(day) + Duration::hours(2 + 5 * hour as i64) + Duration::minutes(7),
            );
            post_with_key(&app, key, model, max_tokens).await;
        }
    }
    app.wait_for_settlement().await;
    clock.set(start + Duration::days(3) + Duration::hours(1));

    let window_end = start + Duration::days(3);
    let organization = app.tollgate.organization_named("Default").await.expect("org");
    let operator = app.tollgate.operator_of(&organization, "test");
    let ledger = operator
        .settled_charges(start, window_end)
        .await
        .expect("ledger")
        .nanos();
    assert!(ledger > 0);
    let (available, held, spent) = app.balance().await;
    assert_eq!(held, 0);
    assert_eq!(spent, ledger, "every charge falls in the window");
    assert!(available > 0);

    let base = format!(
        "/v1/organizations/cost_report?starting_at={}&ending_at={}",
        start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        window_end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    for grouping in [
        "",
        "&group_by[]=workspace_id",
        "&group_by[]=description",
        "&group_by[]=workspace_id&group_by[]=description",
    ] {
        let (status, report) = app.admin_get(&format!("{base}{grouping}")).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["data"].as_array().expect("buckets").len(), 3);
        assert_eq!(sum_costs(&report), ledger, "grouping '{grouping}'");
    }
    let (_, described) = app
        .admin_get(&format!("{base}&group_by[]=description&group_by[]=workspace_id"))
        .await;
    let first = &described["data"][0]["results"];
    let sonnet_input = first
        .as_array()
        .expect("results")
        .iter()
        .find(|result| {
            result["model"] == "claude-sonnet-4-6" && result["token_type"] == "uncached_input_tokens"
        })
        .expect("an input item for sonnet");
    assert_eq!(
        sonnet_input["description"],
        "Claude Sonnet 4.6 Usage - Input Tokens"
    );
    assert_eq!(sonnet_input["cost_type"], "tokens");
    assert_eq!(sonnet_input["currency"], "USD");
    assert_eq!(
        sonnet_input["workspace_id"],
        Value::Null,
        "the Default workspace is null"
    );
    assert!(
        first
            .as_array()
            .expect("results")
            .iter()
            .all(|result| !result["token_type"].is_null()),
        "today's prices explain every charge: no adjustment item"
    );
    let ws_items = first
        .as_array()
        .expect("results")
        .iter()
        .filter(|result| result["workspace_id"] == workspace_id.as_str())
        .count();
    assert!(ws_items >= 2);

    // Paged one day at a time, the pages still add up to the ledger.
    let mut total = 0;
    let mut page: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &page {
            Some(token) => format!("{base}&limit=1&page={token}"),
            None => format!("{base}&limit=1"),
        };
        let (status, report) = app.admin_get(&path).await;
        assert_eq!(status, 200, "{report}");
        total += sum_costs(&report);
        pages += 1;
        if report["has_more"] == false {
            assert_eq!(report["next_page"], Value::Null);
            break;
        }
        page = report["next_page"].as_str().map(str::to_owned);
        assert!(page.as_deref().is_some_and(|token| token.starts_with("page_")));
    }
    assert_eq!((pages, total), (3, ledger));

    // The CSV export of the same window adds up too.
    let csv = app
        .client
        .get(app.url(&format!("{base}&group_by[]=description&format=csv")))
        .header("x-api-key", &app.admin_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/csv")
    );
    let text = csv.text().await.expect("body");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(tollgate_admin_api::csv::COST_HEADER));
    let csv_total: i64 = lines
        .map(|line| cents_to_nanos(line.rsplit(',').next().expect("amount column")))
        .sum();
    assert_eq!(csv_total, ledger);

    // The usage report counts every charged token once, at any bucket width.
    let records = app.usage_records().await;
    let charged: Vec<_> = records
        .iter()
        .filter(|record| {
            matches!(
                record.status,
                UsageStatus::Succeeded | UsageStatus::ClientDisconnected
            )
        })
        .collect();
    assert_eq!(charged.len(), 12);
    let input: u64 = charged.iter().map(|record| record.usage.input_tokens).sum();
    let output: u64 = charged.iter().map(|record| record.usage.output_tokens).sum();
    let usage_base = base.replace("cost_report", "usage_report/messages");
    for (width, limit) in [("1d", 31), ("1h", 168)] {
        let (status, report) = app
            .admin_get(&format!(
                "{usage_base}&bucket_width={width}&limit={limit}&group_by[]=model&group_by[]=workspace_id"
            ))
            .await;
        assert_eq!(status, 200, "{report}");
        let results: Vec<Value> = report["data"]
            .as_array()
            .expect("buckets")
            .iter()
            .flat_map(|bucket| bucket["results"].as_array().expect("results").clone())
            .collect();
        let sum = |field: &str| {
            results
                .iter()
                .map(|result| result[field].as_u64().expect("count"))
                .sum::<u64>()
        };
        assert_eq!(
            (sum("uncached_input_tokens"), sum("output_tokens")),
            (input, output),
            "{width}"
        );
        assert!(
            results
                .iter()
                .all(|result| result["service_tier"].is_null() && result["model"].is_string())
        );
    }
    let (_, hourly) = app
        .admin_get(&format!("{usage_base}&bucket_width=1h&limit=168"))
        .await;
    assert_eq!(
        hourly["data"].as_array().expect("buckets").len(),
        72,
        "empty buckets are included"
    );
    let minute_window = format!(
        "/v1/organizations/usage_report/messages?starting_at={}&ending_at={}&bucket_width=1m&limit=1440&group_by[]=api_key_id",
        start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (start + Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let (status, minutes) = app.admin_get(&minute_window).await;
    assert_eq!(status, 200);
    let minute_results: usize = minutes["data"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|bucket| bucket["results"].as_array().expect("results").len())
        .sum();
    assert_eq!(
        minute_results, 4,
        "the first day's four requests, each in its minute"
    );

    assert_eq!(
        app.tollgate.store().usage_rollup_problems().await.expect("check"),
        Vec::<String>::new()
    );
    app.assert_ledger_clean().await;
}

#[test]
fn reports_work_from_the_command_line_with_csv() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let _schema = crate::helpers::cli_schema_guard(data_dir.path());
    let run = |arguments: &[&str]| {
        let output = crate::helpers::tollgate_command(data_dir.path())
            .args(arguments)
            .output()
            .expect("tollgate runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run(&[
        "reports",
        "cost",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-04",
        "--csv",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().next(), Some(tollgate_admin_api::csv::COST_HEADER));
    let (ok, stdout, stderr) = run(&[
        "reports",
        "usage",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-02",
        "--bucket-width",
        "1h",
        "--group-by",
        "model",
    ]);
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["data"].as_array().expect("buckets").len(), 24);
    let (ok, _, stderr) = run(&["reports", "usage", "--from", "2026-03-02", "--to", "2026-03-01"]);
    assert!(!ok);
    assert!(stderr.contains("window"), "{stderr}");
}

/// Sends a Messages request with `headers` and checks it succeeded.
async fn post_attributed(app: &TestApp, model: &str, headers: &[(&str, &[u8])]) {
    let mut request = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &app.api_key)
        .json(&message_body(model));
    for (name, value) in headers {
        request = request.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).expect("a header value"),
        );
    }
    let response = request.send().await.expect("sent");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

/// The amounts of a report's results whose `session_id` is `session` (`None`: all), summed.
fn session_cost(report: &Value, session: Option<&str>) -> i64 {
    report["data"]
        .as_array()
        .expect("buckets")
        .iter()
        .flat_map(|bucket| bucket["results"].as_array().expect("results").clone())
        .filter(|result| session.is_none_or(|id| result["session_id"] == id))
        .map(|result| cents_to_nanos(result["amount"].as_str().expect("amount")))
        .sum()
}

/// Goal: Claude Code's `x-claude-code-session-id` (and agent ids) land on the usage record,
/// bounded but never refused, while the headers still reach the upstream as sent; the
/// cost and usage reports group and filter by session to the exact charge; and the
/// Console's usage page shows a session's cost.
#[tokio::test]
async fn reports_group_and_filter_by_claude_code_session() {
    let app = spawn_app_with(Options::default()).await;
    let long_session = "s".repeat(300);
    post_attributed(
        &app,
        "claude-sonnet-4-6",
        &[
            ("x-claude-code-session-id", b"abc"),
            ("x-claude-code-agent-id", b"agent-7"),
            ("x-claude-code-parent-agent-id", b"agent-1"),
        ],
    )
    .await;
    post_attributed(&app, "fake-sonnet", &[("X-Claude-Code-Session-Id", b"abc")]).await;
    post_attributed(&app, "claude-sonnet-4-6", &[("x-claude-code-session-id", b"def")]).await;
    post_attributed(&app, "claude-sonnet-4-6", &[]).await;
    // Over-long: kept cut at the bound; not printable ASCII: dropped. Neither is refused,
    // and the upstream gets the header as it was sent.
    post_attributed(
        &app,
        "fake-sonnet",
        &[("x-claude-code-session-id", long_session.as_bytes())],
    )
    .await;
    post_attributed(
        &app,
        "claude-sonnet-4-6",
        &[("x-claude-code-session-id", b"caf\xe9")],
    )
    .await;
    // Chat Completions requests are attributed the same way.
    let chat = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&app.api_key)
        .header("x-claude-code-session-id", "abc")
        .json(&crate::helpers::chat_body("claude-sonnet-4-6"))
        .send()
        .await
        .expect("sent");
    assert_eq!(chat.status(), 200);
    app.wait_for_settlement().await;
    let upstream_sessions: Vec<Option<String>> = app
        .fake
        .requests()
        .iter()
        .map(|request| request.header("x-claude-code-session-id").map(str::to_owned))
        .collect();
    assert_eq!(
        upstream_sessions,
        vec![Some("abc".to_owned()), Some(long_session.clone())]
    );

    let records = app.usage_records().await;
    assert_eq!(records.len(), 7);
    assert!(
        records
            .iter()
            .all(|record| record.status == UsageStatus::Succeeded)
    );
    let session_of = |record: &tollgate_service::UsageRecord| {
        record
            .attribution
            .session_id
            .as_ref()
            .map(|label| label.as_str().to_owned())
    };
    assert_eq!(
        records.iter().map(session_of).collect::<Vec<_>>(),
        vec![
            Some("abc".to_owned()),
            Some("abc".to_owned()),
            Some("def".to_owned()),
            None,
            Some("s".repeat(128)),
            None,
            Some("abc".to_owned()),
        ]
    );
    let first = &records[0].attribution;
    assert_eq!(
        first.agent_id.as_ref().map(|label| label.as_str()),
        Some("agent-7")
    );
    assert_eq!(
        first.parent_agent_id.as_ref().map(|label| label.as_str()),
        Some("agent-1")
    );
    assert_eq!(records[1].attribution.agent_id, None);
    let cost_of = |session: &str| -> i64 {
        records
            .iter()
            .filter(|record| session_of(record).as_deref() == Some(session))
            .map(|record| record.cost.nanos())
            .sum()
    };
    let abc_cost = cost_of("abc");
    assert!(abc_cost > 0 && cost_of("def") > 0);
    let (_, held, spent) = app.balance().await;
    assert_eq!(held, 0);

    let today = BucketWidth::Day.snap(app.tollgate.now());
    let window = format!(
        "starting_at={}&ending_at={}",
        today.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (today + Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // Grouped by session: each session's exact charge, and all of them the ledger's.
    let (status, grouped) = app
        .admin_get(&format!(
            "/v1/organizations/cost_report?{window}&group_by[]=session_id"
        ))
        .await;
    assert_eq!(status, 200, "{grouped}");
    assert_eq!(session_cost(&grouped, Some("abc")), abc_cost);
    assert_eq!(session_cost(&grouped, Some("def")), cost_of("def"));
    assert_eq!(session_cost(&grouped, None), spent, "every charge, once");
    let results = grouped["data"][0]["results"].as_array().expect("results");
    assert_eq!(
        results.len(),
        4,
        "abc, def, the cut session and no session: {grouped}"
    );
    // With descriptions too, the session's items still add up to its charge.
    let (_, described) = app
        .admin_get(&format!(
            "/v1/organizations/cost_report?{window}&group_by[]=session_id&group_by[]=description"
        ))
        .await;
    assert_eq!(session_cost(&described, Some("abc")), abc_cost);
    // Filtered: only that session, whatever the grouping.
    let (status, filtered) = app
        .admin_get(&format!(
            "/v1/organizations/cost_report?{window}&session_ids[]=abc"
        ))
        .await;
    assert_eq!(status, 200, "{filtered}");
    assert_eq!(session_cost(&filtered, None), abc_cost);
    assert!(
        filtered["data"][0]["results"][0].get("session_id").is_none(),
        "session_id is shown only when grouped by it"
    );
    // The CSV export carries the session column.
    let csv = app
        .client
        .get(app.url(&format!(
            "/v1/organizations/cost_report?{window}&group_by[]=session_id&format=csv"
        )))
        .header("x-api-key", &app.admin_key)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(tollgate_admin_api::csv::COST_HEADER));
    let csv_abc: i64 = lines
        .filter(|line| line.split(',').nth(3) == Some("abc"))
        .map(|line| cents_to_nanos(line.rsplit(',').next().expect("amount column")))
        .sum();
    assert_eq!(csv_abc, abc_cost);
    let (_, nobody) = app
        .admin_get(&format!(
            "/v1/organizations/cost_report?{window}&session_ids[]=nobody"
        ))
        .await;
    assert_eq!(session_cost(&nobody, None), 0);

    // The usage report: tokens by session, and filtered by session.
    let input_of = |session: &str| -> u64 {
        records
            .iter()
            .filter(|record| session_of(record).as_deref() == Some(session))
            .map(|record| record.usage.input_tokens)
            .sum()
    };
    for query in [
        "group_by[]=session_id&bucket_width=1h&limit=24",
        "group_by[]=session_id&group_by[]=model",
        "session_ids[]=abc&session_ids[]=def&group_by[]=session_id&bucket_width=1m&limit=1440",
    ] {
        let (status, usage) = app
            .admin_get(&format!(
                "/v1/organizations/usage_report/messages?{window}&{query}"
            ))
            .await;
        assert_eq!(status, 200, "{usage}");
        let abc_input: u64 = usage["data"]
            .as_array()
            .expect("buckets")
            .iter()
            .flat_map(|bucket| bucket["results"].as_array().expect("results").clone())
            .filter(|result| result["session_id"] == "abc")
            .map(|result| result["uncached_input_tokens"].as_u64().expect("count"))
            .sum();
        assert_eq!(abc_input, input_of("abc"), "{query}");
    }
    let (status, unknown_group) = app
        .admin_get(&format!(
            "/v1/organizations/usage_report/messages?{window}&group_by[]=agent_id"
        ))
        .await;
    assert_eq!(status, 400, "{unknown_group}");

    // The Console's usage page shows the session's cost, and the top sessions by cost.
    let organization = app.tollgate.organization_named("Default").await.expect("org");
    app.tollgate
        .create_console_admin(
            &organization.id,
            "ada@example.com",
            "Ada",
            "correct horse battery",
        )
        .await
        .expect("admin");
    let signed_in = app
        .tollgate
        .console_sign_in("ada@example.com", "correct horse battery", "127.0.0.1")
        .await
        .expect("signed in");
    let cookie = format!("__Host-tollgate_session={}", signed_in.token.expose_secret());
    let page = |path: String| {
        let request = app.client.get(app.url(&path)).header("cookie", cookie.clone());
        async move {
            let response = request.send().await.expect("sent");
            assert_eq!(response.status(), 200, "{path}");
            response.text().await.expect("html")
        }
    };
    let html = page("/console/usage?days=1&session=abc".to_owned()).await;
    let expected = NanoUsd::from_nanos(abc_cost).to_string();
    assert!(
        html.contains(&format!("<strong id=\"session-cost\">{expected}</strong>")),
        "the session's cost {expected} in {html}"
    );
    let html = page("/console/usage?days=1&group=session".to_owned()).await;
    let table = html
        .split("<table id=\"top-sessions\">")
        .nth(1)
        .expect("the top sessions table");
    let abc_row = table.find(">abc</a>").expect("abc listed");
    let def_row = table.find(">def</a>").expect("def listed");
    assert!(table.contains(&expected));
    assert_eq!(
        abc_row < def_row,
        abc_cost > cost_of("def"),
        "sessions listed by cost, most first"
    );
    app.assert_ledger_clean().await;
}

/// Goal: web searches are their own item of the cost report (`cost_type` `web_search`),
/// and a long-context request and a data-residency request split by token type at the
/// rates they were billed (the tier's, 1.1 ×), so that no "Other Charges" appear and the
/// items add up to the ledger's charges; the usage report counts the web searches.
#[tokio::test]
async fn web_search_is_its_own_cost_item_and_tiers_and_multipliers_leave_no_other_charges() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        starter_grant_usd: "100.00",
        extra_config: "[[models.fake-sonnet.long_context]]\nabove_input_tokens = 200000\ninput = \"6\"\noutput = \"22.50\"\n",
        ..Options::default()
    })
    .await;
    let clock = app.clock.clone().expect("manual clock");
    let start = BucketWidth::Day.snap(app.tollgate.now());
    clock.set(start + Duration::hours(1));

    // Three web searches, declared (max_uses) so that they are reserved for.
    app.fake
        .set_behavior(tollgate_testkit::Behavior::Ok(tollgate_testkit::Reply {
            input_tokens: 1_001,
            output_tokens: 33,
            web_search_requests: 3,
            ..tollgate_testkit::Reply::default()
        }));
    let mut searching = message_body("fake-sonnet");
    searching["max_tokens"] = json!(100);
    searching["tools"] = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]);
    post_body(&app, &app.api_key, &searching).await;
    // A long prompt: past the 200K tier, every token at its rates.
    app.fake
        .set_behavior(tollgate_testkit::Behavior::Ok(tollgate_testkit::Reply {
            input_tokens: 200_333,
            output_tokens: 17,
            ..tollgate_testkit::Reply::default()
        }));
    let mut long = message_body("fake-sonnet");
    long["max_tokens"] = json!(100);
    long["messages"] = json!([{"role": "user", "content": "x".repeat(210_000)}]);
    post_body(&app, &app.api_key, &long).await;
    // Data residency, as the upstream reports where inference ran (`usage.inference_geo`):
    // 1.1 × on 7 input and 3 output tokens is fractional before rounding.
    app.fake
        .set_behavior(tollgate_testkit::Behavior::Ok(tollgate_testkit::Reply {
            input_tokens: 7,
            output_tokens: 3,
            inference_geo: Some("us"),
            ..tollgate_testkit::Reply::default()
        }));
    let mut resident = message_body("fake-sonnet");
    resident["max_tokens"] = json!(100);
    resident["inference_geo"] = json!("us");
    post_body(&app, &app.api_key, &resident).await;
    // Asked for, but the upstream ran it globally: standard rates.
    app.fake
        .set_behavior(tollgate_testkit::Behavior::Ok(tollgate_testkit::Reply {
            input_tokens: 5,
            output_tokens: 2,
            inference_geo: Some("global"),
            ..tollgate_testkit::Reply::default()
        }));
    post_body(&app, &app.api_key, &resident).await;
    app.wait_for_settlement().await;
    clock.set(start + Duration::hours(3));

    let (_, _, spent) = app.balance().await;
    let searches = 30_000_000;
    let expected = 1_001 * 3_000
        + 33 * 15_000
        + searches
        + 200_333 * 6_000
        + 17 * 22_500
        + (7 * 3_000 + 3 * 15_000) * 11 / 10
        + i64::from((7 * 3_000 + 3 * 15_000) * 11 % 10 != 0)
        + 5 * 3_000
        + 2 * 15_000;
    assert_eq!(spent, expected, "each charged at its tier and multipliers");

    let window = format!(
        "starting_at={}&ending_at={}",
        start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (start + Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let (status, report) = app
        .admin_get(&format!(
            "/v1/organizations/cost_report?{window}&group_by[]=description"
        ))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(sum_costs(&report), spent);
    let results = report["data"][0]["results"].as_array().expect("results").clone();
    assert!(
        results.iter().all(|item| !item["description"]
            .as_str()
            .unwrap_or_default()
            .ends_with("Other Charges")),
        "no Other Charges: {results:?}"
    );
    let web_search: Vec<&Value> = results
        .iter()
        .filter(|item| item["cost_type"] == "web_search")
        .collect();
    assert_eq!(web_search.len(), 1, "{results:?}");
    assert_eq!(
        cents_to_nanos(web_search[0]["amount"].as_str().expect("amount")),
        searches
    );
    assert_eq!(web_search[0]["token_type"], Value::Null);
    assert!(
        web_search[0]["description"]
            .as_str()
            .is_some_and(|description| description.ends_with("Usage - Web Search")),
        "{}",
        web_search[0]
    );
    let long_input = results
        .iter()
        .find(|item| item["token_type"] == "uncached_input_tokens" && item["context_window"] == "200k-1M")
        .expect("the long prompt's input");
    assert_eq!(
        cents_to_nanos(long_input["amount"].as_str().expect("amount")),
        200_333 * 6_000,
        "at the tier's rate"
    );

    let (status, usage) = app
        .admin_get(&format!("/v1/organizations/usage_report/messages?{window}"))
        .await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(
        usage["data"][0]["results"][0]["server_tool_use"]["web_search_requests"],
        3
    );
}
