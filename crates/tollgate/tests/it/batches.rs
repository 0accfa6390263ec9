//! Message Batches end to end: created, run in the background by the runner, retrieved,
//! listed, canceled, expired and deleted over HTTP, with the ledger checked after each: the
//! charge is the sum of the succeeded requests at the Batch rate (half, rounded up), nothing
//! stays reserved once the batch ended, and a batch that does not fit moves no money.

use std::time::Duration;

use chrono::DurationRound;
use serde_json::{Value, json};
use tollgate_core::money::NanoUsd;
use tollgate_core::pricing::Multipliers;
use tollgate_core::usage::TokenUsage;
use tollgate_service::{BatchClaim, BatchRequestState, Clock, Finish, RequestPlan, UsageStatus};
use tollgate_testkit::{Behavior, Reply};

use crate::helpers::{Options, TestApp, sonnet_cost, spawn_app_with, starter_nanos};

/// Tokens the fake upstream reports for every request.
const INPUT_TOKENS: u64 = 40;
const OUTPUT_TOKENS: u64 = 6;

fn reply() -> Reply {
    Reply {
        text: "Batched.".into(),
        input_tokens: INPUT_TOKENS,
        output_tokens: OUTPUT_TOKENS,
        ..Reply::default()
    }
}

/// `standard` at the Batch rate: half, rounded up to the nano-dollar.
fn batch_rate(standard: i64) -> i64 {
    standard / 2 + standard % 2
}

/// One request's charge at the Batch rate.
fn batch_cost() -> i64 {
    batch_rate(sonnet_cost(INPUT_TOKENS as i64, OUTPUT_TOKENS as i64))
}

fn batch_body(requests: usize, max_tokens: u64) -> Value {
    json!({
        "requests": (0..requests).map(|index| json!({
            "custom_id": format!("item-{index}"),
            "params": {
                "model": "fake-sonnet",
                "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": format!("Question {index}")}],
            },
        })).collect::<Vec<_>>(),
    })
}

impl TestApp {
    async fn batch_call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", "2023-06-01");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("batch call");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Creates a batch of `requests` requests (`batch_body`), which must be accepted; its id.
    async fn create_batch(&self, requests: usize, max_tokens: u64) -> String {
        let (status, created) = self
            .batch_call(
                reqwest::Method::POST,
                "/v1/messages/batches",
                Some(&batch_body(requests, max_tokens)),
            )
            .await;
        assert_eq!(status, 200, "{created}");
        created["id"].as_str().expect("id").to_owned()
    }

    /// Polls the batch until it ended (bounded).
    async fn wait_for_batch_end(&self, batch_id: &str) -> Value {
        for _ in 0..400 {
            let (status, batch) = self
                .batch_call(
                    reqwest::Method::GET,
                    &format!("/v1/messages/batches/{batch_id}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{batch}");
            if batch["processing_status"] == "ended" {
                return batch;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("batch {batch_id} did not end");
    }

    async fn batch_results(&self, batch: &Value) -> Vec<Value> {
        let url = batch["results_url"].as_str().expect("results_url once ended");
        let response = self
            .client
            .get(url)
            .header("x-api-key", &self.api_key)
            .send()
            .await
            .expect("results");
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("results body");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

/// Goal: every request of a batch runs once on the reservation made at creation and is
/// charged half its standard cost; the batch object, list, results and delete take
/// Anthropic's shapes.
#[tokio::test]
async fn a_batch_runs_each_request_once_at_half_price() {
    let app = spawn_app_with(Options::default()).await;
    app.fake.set_behavior(Behavior::Ok(reply()));
    let (status, created) = app
        .batch_call(
            reqwest::Method::POST,
            "/v1/messages/batches",
            Some(&batch_body(3, 100)),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let batch_id = created["id"].as_str().expect("id").to_owned();
    assert!(batch_id.starts_with("msgbatch_"), "{batch_id}");
    assert_eq!(created["type"], "message_batch");
    assert_eq!(created["processing_status"], "in_progress");
    assert_eq!(created["results_url"], Value::Null);
    for field in ["created_at", "expires_at"] {
        assert!(
            created[field].as_str().is_some_and(|at| at.ends_with('Z')),
            "{created}"
        );
    }

    let ended = app.wait_for_batch_end(&batch_id).await;
    assert_eq!(
        ended["request_counts"],
        json!({"processing": 0, "succeeded": 3, "errored": 0, "canceled": 0, "expired": 0})
    );
    assert!(ended["ended_at"].is_string());
    let results = app.batch_results(&ended).await;
    assert_eq!(results.len(), 3);
    for (index, line) in results.iter().enumerate() {
        assert_eq!(line["custom_id"], format!("item-{index}"));
        assert_eq!(line["result"]["type"], "succeeded");
        assert_eq!(line["result"]["message"]["type"], "message");
        assert_eq!(line["result"]["message"]["usage"]["output_tokens"], OUTPUT_TOKENS);
    }
    assert_eq!(app.fake.requests().len(), 3, "each request ran once");

    let charged = 3 * batch_cost();
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (starter_nanos() - charged, 0, charged));
    let records = app.usage_records().await;
    assert_eq!(records.len(), 3);
    assert!(
        records
            .iter()
            .all(|record| record.status == UsageStatus::Succeeded
                && record.model == "fake-sonnet"
                && record.cost.nanos() == batch_cost())
    );
    app.assert_ledger_clean().await;

    let (status, list) = app
        .batch_call(reqwest::Method::GET, "/v1/messages/batches?limit=10", None)
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"][0]["id"], batch_id);
    assert_eq!(
        (list["has_more"].clone(), list["first_id"].clone()),
        (json!(false), json!(batch_id))
    );

    let (status, deleted) = app
        .batch_call(
            reqwest::Method::DELETE,
            &format!("/v1/messages/batches/{batch_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, json!({"id": batch_id, "type": "message_batch_deleted"}));
    let (status, _) = app
        .batch_call(
            reqwest::Method::GET,
            &format!("/v1/messages/batches/{batch_id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

/// Goal: a batch whose bound at the Batch rate exceeds the credit is refused as
/// `/v1/messages` refuses a request (same wording), and moves no money: nothing charged,
/// nothing reserved, no batch.
#[tokio::test]
async fn a_batch_that_does_not_fit_is_refused_whole() {
    let app = spawn_app_with(Options::default()).await;
    app.fake.set_behavior(Behavior::Ok(reply()));
    // 100 requests of up to 10,000 output tokens: about $7.50 at the Batch rate, over $5.
    let (status, refused) = app
        .batch_call(
            reqwest::Method::POST,
            "/v1/messages/batches",
            Some(&batch_body(100, 10_000)),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["type"], "invalid_request_error");
    assert_eq!(refused["error"]["message"], tollgate_gateway::CREDIT_TOO_LOW);
    assert_eq!(app.balance().await, (starter_nanos(), 0, 0));
    let (_, list) = app
        .batch_call(reqwest::Method::GET, "/v1/messages/batches", None)
        .await;
    assert_eq!(list["data"], json!([]));
    assert!(app.usage_records().await.is_empty(), "nothing was written");
    assert_eq!(
        app.tollgate
            .store()
            .pending_reservation_count(Some(&app.org_id))
            .await
            .expect("count"),
        0
    );
    assert!(app.fake.requests().is_empty());
    app.assert_ledger_clean().await;
}

/// Goal: a request's params are checked as `/v1/messages` checks them, and the error names
/// the request by its index; a `custom_id` is unique within its batch.
#[tokio::test]
async fn bad_requests_are_refused_by_index() {
    let app = spawn_app_with(Options::default()).await;
    let mut body = batch_body(3, 100);
    body["requests"][2]["params"]["model"] = json!("no-such-model");
    let (status, refused) = app
        .batch_call(reqwest::Method::POST, "/v1/messages/batches", Some(&body))
        .await;
    assert_eq!(status, 404, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("requests.2.params: ")),
        "{refused}"
    );
    let mut body = batch_body(2, 100);
    body["requests"][1]["custom_id"] = json!("item-0");
    let (status, refused) = app
        .batch_call(reqwest::Method::POST, "/v1/messages/batches", Some(&body))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("requests.1.custom_id"))
    );
    assert_eq!(app.balance().await, (starter_nanos(), 0, 0));
}

/// Goal: canceling ends the requests not yet running as `canceled`, uncharged; the one
/// running finishes and is charged; then nothing stays reserved.
#[tokio::test]
async fn canceling_charges_only_what_ran() {
    let app = spawn_app_with(Options {
        extra_config: "[batches]\nconcurrency = 1",
        ..Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Stall {
        deltas: 0,
        duration: Duration::from_millis(700),
    });
    let batch_id = app.create_batch(4, 100).await;
    // Wait until the runner holds the first request.
    for _ in 0..100 {
        if !app.fake.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, canceling) = app
        .batch_call(
            reqwest::Method::POST,
            &format!("/v1/messages/batches/{batch_id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{canceling}");
    assert_eq!(canceling["processing_status"], "canceling");
    assert!(canceling["cancel_initiated_at"].is_string());
    let ended = app.wait_for_batch_end(&batch_id).await;
    assert_eq!(ended["request_counts"]["canceled"], 3, "{ended}");
    assert_eq!(ended["request_counts"]["succeeded"], 1, "{ended}");
    let results = app.batch_results(&ended).await;
    assert_eq!(results[0]["result"]["type"], "succeeded");
    assert!(
        results[1..]
            .iter()
            .all(|line| line["result"] == json!({"type": "canceled"}))
    );

    app.wait_for_settlement().await;
    let (available, held, spent) = app.balance().await;
    assert_eq!(held, 0, "nothing stays reserved");
    assert_eq!(available + spent, starter_nanos());
    let records = app.usage_records().await;
    let charged: i64 = records.iter().map(|record| record.cost.nanos()).sum();
    assert_eq!(spent, charged);
    assert_eq!(
        records
            .iter()
            .filter(|record| record.status == UsageStatus::Succeeded)
            .count(),
        1
    );
    app.assert_ledger_clean().await;
}

/// Goal: 24 hours after creation the requests that have not run expire, uncharged, and the
/// batch ends; its results are deleted 29 days after it ended. (No runner here:
/// `concurrency = 0`.)
#[tokio::test]
async fn unrun_requests_expire_after_a_day() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        extra_config: "[batches]\nconcurrency = 0",
        ..Options::default()
    })
    .await;
    let clock = app.clock.clone().expect("manual clock");
    let batch_id = app.create_batch(3, 100).await;
    let (_, held, _) = app.balance().await;
    assert!(held > 0, "the batch's bound is reserved at creation");
    clock.advance(chrono::Duration::hours(23));
    app.tollgate.maintain().await.expect("maintenance");
    assert_eq!(
        app.balance().await.1,
        held,
        "the reaper leaves a living batch's reservations alone"
    );

    clock.advance(chrono::Duration::hours(1));
    app.tollgate.maintain().await.expect("maintenance");
    let ended = app.wait_for_batch_end(&batch_id).await;
    assert_eq!(ended["request_counts"]["expired"], 3, "{ended}");
    let results = app.batch_results(&ended).await;
    assert!(
        results
            .iter()
            .all(|line| line["result"] == json!({"type": "expired"}))
    );
    assert_eq!(app.balance().await, (starter_nanos(), 0, 0));
    app.assert_ledger_clean().await;

    clock.advance(chrono::Duration::days(29));
    app.tollgate.maintain().await.expect("maintenance");
    let (_, archived) = app
        .batch_call(
            reqwest::Method::GET,
            &format!("/v1/messages/batches/{batch_id}"),
            None,
        )
        .await;
    assert!(archived["archived_at"].is_string(), "{archived}");
    let (status, _) = app
        .batch_call(
            reqwest::Method::GET,
            &format!("/v1/messages/batches/{batch_id}/results"),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

/// Goal: the official Python SDK's `client.messages.batches` works unchanged against the
/// simulated model, and the batch is charged half of what its requests used.
#[tokio::test]
async fn the_anthropic_sdk_runs_a_batch() {
    let app = spawn_app_with(Options::default()).await;
    let cases = crate::sdk::run_script(&app, "anthropic_batches.py").await;
    let created = &cases["created"];
    assert!(
        created["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("msgbatch_")),
        "{created}"
    );
    assert_eq!(created["type"], "message_batch");
    let ended = &cases["ended"];
    assert_eq!(
        (ended["status"].clone(), ended["succeeded"].clone()),
        (json!("ended"), json!(3))
    );
    assert!(
        ended["results_url"]
            .as_str()
            .is_some_and(|url| url.ends_with("/results"))
    );
    assert_eq!(cases["list"]["ids"], json!([created["id"]]));
    let results = cases["results"]["results"].as_array().expect("results");
    assert_eq!(
        results
            .iter()
            .map(|line| line["custom_id"].clone())
            .collect::<Vec<_>>(),
        [json!("first"), json!("second"), json!("third")]
    );
    assert!(results.iter().all(|line| line["type"] == "succeeded"));
    assert_eq!(cases["cancel_ended"]["status"], "ended");
    assert_eq!(cases["deleted"]["type"], "message_batch_deleted");
    assert_eq!(cases["gone"]["raised"], "NotFoundError");

    // Sonnet ($3/$15 per MTok) at the Batch rate, request by request.
    let expected: i64 = results
        .iter()
        .map(|line| {
            let standard = sonnet_cost(
                crate::sdk::int(line, "input_tokens"),
                crate::sdk::int(line, "output_tokens"),
            );
            batch_rate(standard)
        })
        .sum();
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (starter_nanos() - expected, 0, expected));
    app.assert_ledger_clean().await;
}

/// Goal: another organization's key finds none of a batch's routes: each answers 404, and
/// its list is empty.
#[tokio::test]
async fn another_organizations_batch_is_not_found() {
    let app = spawn_app_with(Options::default()).await;
    app.fake.set_behavior(Behavior::Ok(reply()));
    let batch_id = app.create_batch(1, 100).await;
    app.wait_for_batch_end(&batch_id).await;

    let other = app.tollgate.create_organization("Tenant B").await.expect("org B");
    let other_workspace = app
        .tollgate
        .store()
        .default_workspace(&other.id)
        .await
        .expect("B's workspace");
    let other_key = app
        .tollgate
        .create_key(
            tollgate_core::keys::KeyKind::Api,
            &other.id,
            Some(&other_workspace.id),
            "B key",
        )
        .await
        .expect("B key")
        .secret
        .expose_secret()
        .to_owned();
    let as_other = |method: reqwest::Method, path: String| {
        let request = app
            .client
            .request(method, app.url(&path))
            .header("x-api-key", &other_key);
        async move { request.send().await.expect("sent").status().as_u16() }
    };
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/messages/batches/{batch_id}")),
        (
            reqwest::Method::GET,
            format!("/v1/messages/batches/{batch_id}/results"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/messages/batches/{batch_id}/cancel"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/messages/batches/{batch_id}"),
        ),
    ] {
        assert_eq!(
            as_other(method.clone(), path.clone()).await,
            404,
            "{method} {path}"
        );
    }
    let list: Value = app
        .client
        .get(app.url("/v1/messages/batches"))
        .header("x-api-key", &other_key)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("list JSON");
    assert_eq!(list["data"], json!([]));
    let (status, _) = app
        .batch_call(
            reqwest::Method::GET,
            &format!("/v1/messages/batches/{batch_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "still there for its own organization");
}

/// Goal: a batch over the organization's spend limit is refused with the words
/// `/v1/messages` uses for a spent limit, and moves no money.
#[tokio::test]
async fn a_batch_over_the_spend_limit_is_refused_as_messages_are() {
    let app = spawn_app_with(Options::default()).await;
    app.fake.set_behavior(Behavior::Ok(reply()));
    // One cent a month: less than two requests' bound at the Batch rate.
    app.tollgate
        .set_organization_spend_limit(&app.org_id, Some(NanoUsd::from_nanos(10_000_000)), "test", None)
        .await
        .expect("below the tier cap");
    let message = app
        .post_messages(&json!({
            "model": "fake-sonnet",
            "max_tokens": 10_000,
            "messages": [{"role": "user", "content": "Question"}],
        }))
        .await;
    let (message_status, message_refusal): (u16, Value) =
        (message.status().as_u16(), message.json().await.expect("json"));
    let (status, refused) = app
        .batch_call(
            reqwest::Method::POST,
            "/v1/messages/batches",
            Some(&batch_body(10, 10_000)),
        )
        .await;
    assert_eq!((status, message_status), (400, 400), "{refused}");
    assert_eq!(refused["error"]["type"], message_refusal["error"]["type"]);
    assert_eq!(refused["error"]["message"], message_refusal["error"]["message"]);
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("You have reached your specified API usage limits.")),
        "{refused}"
    );
    assert_eq!(app.balance().await, (starter_nanos(), 0, 0));
    app.assert_ledger_clean().await;
}

/// Goal: a request the upstream refuses ends `errored` with the error the client would have
/// got from `/v1/messages`, and is not charged.
#[tokio::test]
async fn an_errored_request_is_not_charged() {
    let app = spawn_app_with(Options::default()).await;
    app.fake.set_behavior(Behavior::Refuse {
        status: 400,
        error_type: "invalid_request_error".into(),
        message: "prompt is too long".into(),
    });
    let (status, created) = app
        .batch_call(
            reqwest::Method::POST,
            "/v1/messages/batches",
            Some(&batch_body(2, 100)),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let ended = app.wait_for_batch_end(created["id"].as_str().expect("id")).await;
    assert_eq!(ended["request_counts"]["errored"], 2, "{ended}");
    let results = app.batch_results(&ended).await;
    for line in &results {
        assert_eq!(line["result"]["type"], "errored");
        assert_eq!(line["result"]["error"]["type"], "error");
        assert_eq!(line["result"]["error"]["error"]["type"], "invalid_request_error");
        assert_eq!(line["result"]["error"]["error"]["message"], "prompt is too long");
    }
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (starter_nanos(), 0, 0));
    app.assert_ledger_clean().await;
}

/// Goal: the runner respects the workspace's rate limits: a request the buckets refuse
/// waits and is retried, and ends `succeeded`, not `errored`.
#[tokio::test]
async fn a_rate_limited_request_waits_and_runs() {
    // Room for two requests of 210 output tokens at once, not three.
    let tight = r#"
        [batches]
        concurrency = 3
        [limit_sets.tight]
        monthly_spend_limit_usd = "1000"
        count_tokens_requests_per_minute = 100
        rate_limits.sonnet = { requests_per_minute = 100, input_tokens_per_minute = 100000, output_tokens_per_minute = 600 }
        rate_limits.opus = { requests_per_minute = 100, input_tokens_per_minute = 100000, output_tokens_per_minute = 100000 }
        rate_limits.haiku = { requests_per_minute = 100, input_tokens_per_minute = 100000, output_tokens_per_minute = 100000 }
    "#;
    let app = spawn_app_with(Options {
        extra_config: tight,
        ..Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        latency: Duration::from_millis(500),
        ..reply()
    }));
    app.tollgate
        .set_organization_limit_set(&app.org_id, Some("tight"), "test", Some("test agreement"))
        .await
        .expect("assigned");
    let started = tokio::time::Instant::now();
    let (status, created) = app
        .batch_call(
            reqwest::Method::POST,
            "/v1/messages/batches",
            Some(&batch_body(3, 210)),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let ended = app.wait_for_batch_end(created["id"].as_str().expect("id")).await;
    assert_eq!(ended["request_counts"]["succeeded"], 3, "{ended}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the third request waited for its bucket"
    );
    let charged = 3 * batch_cost();
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (starter_nanos() - charged, 0, charged));
    app.assert_ledger_clean().await;
}

/// Goal: a runner that stalled past its lease, whose request another runner re-claimed,
/// neither settles nor ends the request: its late success charges nothing, its late error
/// voids nothing and writes no result, and the runner that holds the claim settles the
/// request once.
#[tokio::test]
async fn a_stalled_runners_late_result_is_not_settled() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        extra_config: "[batches]\nconcurrency = 0",
        ..Options::default()
    })
    .await;
    let clock = app.clock.clone().expect("manual clock");
    let batch_id = app.create_batch(1, 100).await;
    let held = app.balance().await.1;
    let lease = chrono::Duration::minutes(2);
    let stalled = app
        .tollgate
        .claim_batch_requests("runner-a", lease, 1)
        .await
        .expect("claim")
        .remove(0);
    clock.advance(chrono::Duration::minutes(3));
    let current = app
        .tollgate
        .claim_batch_requests("runner-b", lease, 1)
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(
        current.request_id, stalled.request_id,
        "the lapsed claim is taken over"
    );

    let (caller, model) = app.caller_and_model("fake-sonnet").await;
    let attribution = tollgate_core::attribution::Attribution::default();
    let run = |claimed: &tollgate_service::ClaimedBatchRequest| {
        let plan = RequestPlan {
            request_id: &stalled.request_id,
            model: &model,
            cost_bound: claimed.amount,
            input_tokens_estimate: INPUT_TOKENS,
            max_tokens: 100,
            attribution: &attribution,
            multipliers: Multipliers {
                batch: true,
                ..Multipliers::default()
            },
            priced_at: claimed.batch_created_at,
            settled_before_reply: false,
        };
        let claim = BatchClaim {
            attempt: claimed.attempt,
            lease,
        };
        let tollgate = app.tollgate.clone();
        let caller = caller.clone();
        let reservation_id = claimed.reservation_id.clone();
        async move {
            let open = tollgate
                .adopt(&caller, plan, reservation_id, claim)
                .await
                .expect("admitted");
            let used = Finish {
                usage: TokenUsage {
                    input_tokens: INPUT_TOKENS,
                    output_tokens: OUTPUT_TOKENS,
                    ..TokenUsage::default()
                },
                status: UsageStatus::Succeeded,
                error_type: None,
            };
            tollgate.finish(open, used).await.expect("finished")
        }
    };

    let late = run(&stalled).await;
    assert!(late.already_ended && late.charged == NanoUsd::ZERO, "{late:?}");
    assert_eq!(app.balance().await, (starter_nanos() - held, held, 0));
    assert!(
        !app.tollgate
            .end_batch_request(&stalled, BatchRequestState::Errored, "{}")
            .await
            .expect("end"),
        "a stalled runner's late error ends nothing"
    );
    assert_eq!(
        app.balance().await,
        (starter_nanos() - held, held, 0),
        "and voids nothing: the reservation is the new claim's"
    );

    let settled = run(&current).await;
    assert_eq!(settled.charged.nanos(), batch_cost());
    assert!(
        app.tollgate
            .end_batch_request(&current, BatchRequestState::Succeeded, "{\"type\":\"succeeded\"}")
            .await
            .expect("end")
    );
    let ended = app.wait_for_batch_end(&batch_id).await;
    assert_eq!(ended["request_counts"]["succeeded"], 1, "{ended}");
    assert_eq!(
        app.balance().await,
        (starter_nanos() - batch_cost(), 0, batch_cost())
    );
    app.assert_ledger_clean().await;
}

/// Runs the batches of `app`'s database in a second process on `clock` (a runner with
/// `concurrency = 1`) until each of `batch_ids` has ended, then stops it.
async fn run_in_another_process(
    app: &TestApp,
    clock: std::sync::Arc<dyn tollgate_service::Clock>,
    batch_ids: &[&str],
) {
    let mut config = app.config.clone();
    config.batches.concurrency = 1;
    let runner = tollgate::app::Application::build_with_clock(&config, clock)
        .await
        .expect("runner builds");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        runner
            .run_until(async {
                let _ = stopped.await;
            })
            .await
            .expect("runner runs");
    });
    for batch_id in batch_ids {
        app.wait_for_batch_end(batch_id).await;
    }
    let _ = stop.send(());
    serving.await.expect("runner stops");
}

/// Goal: a batch runs as its key stands when each request comes to run, not as it stood
/// at creation: a model taken off the key's list since is refused with the
/// `permission_error` a message would get, a key disabled since runs nothing more, and
/// neither is charged.
#[tokio::test]
async fn a_key_narrowed_or_disabled_after_creating_a_batch_runs_nothing_it_no_longer_may() {
    let app = spawn_app_with(Options {
        extra_config: "[batches]\nconcurrency = 0",
        ..Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(reply()));
    let narrowed = app.create_batch(1, 100).await;
    let (status, second_key) = app
        .admin_post("/v1/organizations/api_keys", json!({"name": "batch key"}))
        .await;
    assert_eq!(status, 200, "{second_key}");
    let disabled = {
        let response = app
            .client
            .post(app.url("/v1/messages/batches"))
            .header(
                "x-api-key",
                second_key["api_key_secret"].as_str().expect("secret"),
            )
            .header("anthropic-version", "2023-06-01")
            .json(&batch_body(1, 100))
            .send()
            .await
            .expect("created");
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.expect("batch")["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let first_key = app
        .tollgate
        .store()
        .list_keys(&app.org_id, tollgate_core::keys::KeyKind::Api, None)
        .await
        .expect("keys")
        .into_iter()
        .find(|key| key.id != second_key["id"].as_str().expect("id"))
        .expect("the first start's key");
    for (key_id, change) in [
        (first_key.id.as_str(), json!({"allowed_models": ["fake-gpt"]})),
        (
            second_key["id"].as_str().expect("id"),
            json!({"status": "inactive"}),
        ),
    ] {
        let (status, updated) = app
            .admin_post(&format!("/v1/organizations/api_keys/{key_id}"), change)
            .await;
        assert_eq!(status, 200, "{updated}");
    }
    let balance_before = app.balance().await;

    run_in_another_process(
        &app,
        std::sync::Arc::new(tollgate_service::SystemClock),
        &[&narrowed, &disabled],
    )
    .await;

    for (batch_id, error_type) in [
        (&narrowed, "permission_error"),
        (&disabled, "authentication_error"),
    ] {
        let (_, batch) = app
            .batch_call(
                reqwest::Method::GET,
                &format!("/v1/messages/batches/{batch_id}"),
                None,
            )
            .await;
        assert_eq!(batch["request_counts"]["errored"], 1, "{batch}");
        let results = app.batch_results(&batch).await;
        assert_eq!(
            results[0]["result"]["error"]["error"]["type"], error_type,
            "{}",
            results[0]
        );
    }
    assert!(app.fake.requests().is_empty(), "nothing reached the upstream");
    app.wait_for_settlement().await;
    let (available, held, _) = app.balance().await;
    assert_eq!(
        (available, held),
        (balance_before.0 + balance_before.1, 0),
        "both reservations voided"
    );
    app.assert_ledger_clean().await;
}

/// Goal: a batch request is priced at the rates in force when its batch was created, not
/// when it runs: a price rise between the two charges the old price, at the Batch rate.
#[tokio::test]
async fn a_batch_request_is_priced_at_its_batchs_creation() {
    let now = tollgate_service::SystemClock.now();
    let next_hour = (now + chrono::Duration::hours(1))
        .duration_trunc(chrono::Duration::hours(1))
        .expect("an hour");
    // The price doubles on the next hour.
    let extra: &'static str = Box::leak(
        format!(
            "[batches]\nconcurrency = 0\n[[models.fake-sonnet.price_changes]]\nfrom = \"{}\"\ninput = \"6\"\noutput = \"30\"\n",
            next_hour.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
        .into_boxed_str(),
    );
    let app = spawn_app_with(Options {
        manual_clock: true,
        extra_config: extra,
        ..Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(reply()));
    let clock = app.clock.clone().expect("manual clock");
    let batch_id = app.create_batch(1, 100).await;
    clock.advance(next_hour - clock.now() + chrono::Duration::minutes(5));

    // A second process over the same database runs the batch, after the price change.
    run_in_another_process(&app, clock.clone(), &[&batch_id]).await;

    app.wait_for_settlement().await;
    let records = app.usage_records().await;
    assert_eq!(records.len(), 1);
    assert!(records[0].started_at >= next_hour, "it ran after the change");
    assert_eq!(
        records[0].cost.nanos(),
        batch_cost(),
        "priced at the creation's rates, not the doubled ones"
    );
    assert_eq!(
        app.balance().await,
        (starter_nanos() - batch_cost(), 0, batch_cost())
    );
    app.assert_ledger_clean().await;
}

/// A provider (kind `anthropic`) whose Message Batches go to its own Batches API, on the
/// test's fake upstream, and a model on it; the provider batch is polled every 50 ms and a
/// runner's claims lapse after a second.
const UPSTREAM_BATCHES: &str = r#"
        [providers.fake-batches]
        kind = "anthropic"
        base_url = "{fake}"
        api_key = "batches-provider-secret"
        batches = "upstream"
        connect_timeout_seconds = 2
        request_timeout_seconds = 5
        [models.batched-sonnet]
        class = "sonnet"
        provider = "fake-batches"
        upstream_model = "claude-sonnet-4-6-upstream"
        input = "3"
        output = "15"
        [batches]
        upstream_poll_millis = 50
        lease_seconds = 1
"#;

fn upstream_batch_body(custom_ids: &[&str], model: &str) -> Value {
    json!({
        "requests": custom_ids.iter().map(|custom_id| json!({
            "custom_id": custom_id,
            "params": {
                "model": model,
                "max_tokens": 100,
                "messages": [{"role": "user", "content": format!("Question {custom_id}")}],
            },
        })).collect::<Vec<_>>(),
    })
}

/// An app with `UPSTREAM_BATCHES`, its fake's provider batches behaving so, and the id of
/// a batch it accepted of `custom_ids` for the model on that provider.
async fn spawn_with_provider_batch(
    behavior: tollgate_testkit::BatchBehavior,
    custom_ids: &[&str],
) -> (TestApp, String) {
    let app = spawn_app_with(Options {
        extra_config: UPSTREAM_BATCHES,
        ..Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(reply()));
    app.fake.set_batch_behavior(behavior);
    let (status, created) = app
        .batch_call(
            reqwest::Method::POST,
            "/v1/messages/batches",
            Some(&upstream_batch_body(custom_ids, "batched-sonnet")),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let batch_id = created["id"].as_str().expect("id").to_owned();
    (app, batch_id)
}

impl TestApp {
    /// What the fake upstream received on its Message Batches routes, in arrival order.
    fn provider_batch_calls(&self) -> Vec<tollgate_testkit::RecordedRequest> {
        self.fake
            .requests()
            .into_iter()
            .filter(|request| request.path.starts_with("/v1/messages/batches"))
            .collect()
    }

    /// Waits (bounded) until the fake upstream received `count` calls on a path ending so.
    async fn wait_for_provider_calls(&self, suffix: &str, count: usize) {
        for _ in 0..200 {
            let calls = self.provider_batch_calls();
            if calls.iter().filter(|call| call.path.ends_with(suffix)).count() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the provider did not get {count} calls on *{suffix}");
    }
}

/// Goal: the requests of a batch that route to an `anthropic` provider taking batches go
/// to its Batches API as one provider batch (the upstream model id in their params, the
/// provider key and the client's version and betas in its headers), the rest run here;
/// results come back in Anthropic's shape, each succeeded request is charged exactly its
/// usage at the Batch rate, the errored one nothing, and nothing stays reserved.
#[tokio::test]
async fn a_batch_for_an_anthropic_provider_goes_to_its_batches_api() {
    let app = spawn_app_with(Options {
        extra_config: UPSTREAM_BATCHES,
        ..Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(reply()));
    app.fake.set_batch_behavior(tollgate_testkit::BatchBehavior {
        polls_in_progress: 2,
        errored_custom_ids: vec!["up-1".to_owned()],
    });
    let mut body = upstream_batch_body(&["up-0", "up-1", "up-2"], "batched-sonnet");
    body["requests"]
        .as_array_mut()
        .expect("requests")
        .push(upstream_batch_body(&["here"], "fake-sonnet")["requests"][0].clone());
    let created: Value = app
        .client
        .post(app.url("/v1/messages/batches"))
        .header("x-api-key", &app.api_key)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "message-batches-2024-09-24")
        .json(&body)
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("batch JSON");
    let batch_id = created["id"].as_str().expect("id").to_owned();

    let ended = app.wait_for_batch_end(&batch_id).await;
    assert_eq!(
        ended["request_counts"],
        json!({"processing": 0, "succeeded": 3, "errored": 1, "canceled": 0, "expired": 0})
    );
    let results = app.batch_results(&ended).await;
    assert_eq!(
        results
            .iter()
            .map(|line| (line["custom_id"].clone(), line["result"]["type"].clone()))
            .collect::<Vec<_>>(),
        [
            (json!("up-0"), json!("succeeded")),
            (json!("up-1"), json!("errored")),
            (json!("up-2"), json!("succeeded")),
            (json!("here"), json!("succeeded")),
        ]
    );
    assert_eq!(results[0]["result"]["message"]["type"], "message");
    assert_eq!(
        results[0]["result"]["message"]["usage"]["output_tokens"],
        OUTPUT_TOKENS
    );
    assert_eq!(
        results[1]["result"]["error"]["error"]["type"],
        "invalid_request_error"
    );

    let calls = app.provider_batch_calls();
    let created_upstream: Vec<_> = calls
        .iter()
        .filter(|call| call.path == "/v1/messages/batches")
        .collect();
    assert_eq!(created_upstream.len(), 1, "one provider batch");
    let submitted = created_upstream[0];
    let params: Vec<_> = submitted.body["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|request| (request["custom_id"].clone(), request["params"]["model"].clone()))
        .collect();
    assert_eq!(
        params,
        [
            (json!("up-0"), json!("claude-sonnet-4-6-upstream")),
            (json!("up-1"), json!("claude-sonnet-4-6-upstream")),
            (json!("up-2"), json!("claude-sonnet-4-6-upstream")),
        ]
    );
    for call in &calls {
        assert_eq!(
            call.header("x-api-key"),
            Some("batches-provider-secret"),
            "{}",
            call.path
        );
        assert_eq!(call.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(call.header("anthropic-beta"), Some("message-batches-2024-09-24"));
    }
    assert!(calls.iter().any(|call| call.path.ends_with("/results")));
    let local: Vec<_> = app
        .fake
        .requests()
        .into_iter()
        .filter(|request| request.path == "/v1/messages")
        .collect();
    assert_eq!(local.len(), 1, "the request for the local provider ran here");

    let charged = 3 * batch_cost();
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (starter_nanos() - charged, 0, charged));
    let records = app.usage_records().await;
    let succeeded: Vec<_> = records
        .iter()
        .filter(|record| record.status == UsageStatus::Succeeded)
        .collect();
    assert_eq!(succeeded.len(), 3);
    assert!(succeeded.iter().all(|record| record.cost.nanos() == batch_cost()
        && record.usage.input_tokens == INPUT_TOKENS
        && record.usage.output_tokens == OUTPUT_TOKENS));
    assert!(
        records
            .iter()
            .filter(|record| record.status != UsageStatus::Succeeded)
            .all(|record| record.cost == NanoUsd::ZERO)
    );
    app.assert_ledger_clean().await;
}

/// Goal: canceling a batch whose requests are at a provider forwards the cancel to the
/// provider's batch; its requests end `canceled` from the provider's results, uncharged.
#[tokio::test]
async fn canceling_a_provider_batch_forwards_the_cancel() {
    let behavior = tollgate_testkit::BatchBehavior {
        polls_in_progress: usize::MAX,
        errored_custom_ids: Vec::new(),
    };
    let (app, batch_id) = spawn_with_provider_batch(behavior, &["a", "b"]).await;
    // Submitted and polled at least once.
    app.wait_for_provider_calls("", 2).await;
    let (status, canceling) = app
        .batch_call(
            reqwest::Method::POST,
            &format!("/v1/messages/batches/{batch_id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{canceling}");
    assert_eq!(canceling["processing_status"], "canceling");

    let ended = app.wait_for_batch_end(&batch_id).await;
    assert_eq!(
        ended["request_counts"],
        json!({"processing": 0, "succeeded": 0, "errored": 0, "canceled": 2, "expired": 0})
    );
    let calls = app.provider_batch_calls();
    assert_eq!(
        calls.iter().filter(|call| call.path.ends_with("/cancel")).count(),
        1,
        "the cancel went to the provider once"
    );
    let results = app.batch_results(&ended).await;
    assert!(results.iter().all(|line| line["result"]["type"] == "canceled"));
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (starter_nanos(), 0, 0));
    app.assert_ledger_clean().await;
}

/// Goal: a provider batch survives a restart mid-poll: the next app on the same database
/// takes the requests over once the dead one's claims lapse, polls the provider batch the
/// first submitted (never submitting it again), and charges each request once.
#[tokio::test]
async fn a_provider_batch_is_finished_after_a_restart_and_charged_once() {
    let behavior = tollgate_testkit::BatchBehavior {
        polls_in_progress: 6,
        errored_custom_ids: Vec::new(),
    };
    let (app, batch_id) = spawn_with_provider_batch(behavior, &["a", "b"]).await;
    // Submitted and polled, not yet ended.
    app.wait_for_provider_calls("", 3).await;
    let app = app.restart().await;
    let polled_before_restart = app.provider_batch_calls().len();

    let ended = app.wait_for_batch_end(&batch_id).await;
    assert_eq!(ended["request_counts"]["succeeded"], 2, "{ended}");
    let calls = app.provider_batch_calls();
    assert!(
        calls[polled_before_restart..]
            .iter()
            .any(|call| call.path.ends_with("/results")),
        "the restarted app read the results"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|call| call.path == "/v1/messages/batches")
            .count(),
        1,
        "submitted once"
    );
    let charged = 2 * batch_cost();
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (starter_nanos() - charged, 0, charged));
    let records = app.usage_records().await;
    assert_eq!(records.len(), 2, "one usage record per request: {records:?}");
    app.assert_ledger_clean().await;
}

/// Goal: the official Python SDK's `client.messages.batches` works unchanged when the
/// batch goes to a provider's own Batches API: one provider batch, Anthropic's results, and
/// each request charged its usage at the Batch rate.
#[tokio::test]
async fn the_anthropic_sdk_runs_a_provider_batch() {
    let app = spawn_app_with(Options {
        extra_config: UPSTREAM_BATCHES,
        ..Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(reply()));
    let cases = crate::sdk::run_script_with(
        &app,
        "anthropic_batches.py",
        &[("TOLLGATE_BATCH_MODEL", "batched-sonnet")],
    )
    .await;
    assert_eq!(
        (
            cases["ended"]["status"].clone(),
            cases["ended"]["succeeded"].clone()
        ),
        (json!("ended"), json!(3))
    );
    let results = cases["results"]["results"].as_array().expect("results");
    assert!(
        results
            .iter()
            .all(|line| line["type"] == "succeeded" && line["output_tokens"] == OUTPUT_TOKENS)
    );
    assert_eq!(cases["deleted"]["type"], "message_batch_deleted");
    let submitted = app
        .provider_batch_calls()
        .into_iter()
        .filter(|call| call.path == "/v1/messages/batches")
        .count();
    assert_eq!(submitted, 1, "one provider batch");
    let charged = 3 * batch_cost();
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (starter_nanos() - charged, 0, charged));
    app.assert_ledger_clean().await;
}
