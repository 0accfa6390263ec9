//! Anthropic's Files API (#20) on the gateway's keys: upload, list (newest first, by
//! `before_id` / `after_id` or the `page` cursor), metadata, the refused download, delete;
//! a file is its workspace's alone, its organization's files stay within the storage quota
//! (exactly, with uploads racing), an expired file is gone at once and purged by the
//! maintenance pass. In a Messages request, a file source reaches an `anthropic` upstream
//! as the id that provider gave it (uploaded there at its first use only), and any other
//! upstream as the file's bytes inline.

use std::path::PathBuf;

use serde_json::{Value, json};
use tollgate_core::keys::KeyKind;

use crate::helpers::{Options, TestApp, spawn_app, spawn_app_with};

const FILES_BETA: &str = "files-api-2025-04-14";

impl TestApp {
    /// A Files API call expected to be refused: as `refusal` reads it.
    async fn files_refusal(&self, method: reqwest::Method, path: &str, key: &str) -> ((u16, String), Value) {
        refusal(self.files_call(method, path, key).await).await
    }

    /// `POST /v1/files` with `key`, a file part and, if given, `expires_in_seconds`.
    async fn upload_with(
        &self,
        key: &str,
        (filename, mime_type, content): (&str, &str, Vec<u8>),
        expires_in_seconds: Option<&str>,
    ) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(content)
            .file_name(filename.to_owned())
            .mime_str(mime_type)
            .expect("mime type");
        let mut form = reqwest::multipart::Form::new().part("file", part);
        if let Some(seconds) = expires_in_seconds {
            form = form.text("expires_in_seconds", seconds.to_owned());
        }
        self.client
            .post(self.url("/v1/files"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", FILES_BETA)
            .multipart(form)
            .send()
            .await
            .expect("request sent")
    }

    /// Uploads a file with the app's key; its metadata.
    async fn upload(&self, filename: &str, mime_type: &str, content: &[u8]) -> Value {
        let response = self
            .upload_with(&self.api_key, (filename, mime_type, content.to_vec()), None)
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    /// A Files API call without a body, with `key` (and without the beta header: it is
    /// optional).
    async fn files_call(&self, method: reqwest::Method, path: &str, key: &str) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .send()
            .await
            .expect("request sent")
    }

    async fn list_files(&self, query: &str) -> Value {
        let response = self
            .files_call(reqwest::Method::GET, &format!("/v1/files{query}"), &self.api_key)
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    /// Where the file's bytes are kept.
    async fn file_path(&self, file_id: &str) -> PathBuf {
        let (caller, _) = self.caller_and_model("fake-sonnet").await;
        self.config
            .file_settings()
            .directory
            .join(caller.workspace_id)
            .join(file_id)
    }

    /// A key of a new workspace of the app's organization.
    async fn other_workspace_key(&self) -> String {
        let workspace = self
            .tollgate
            .create_workspace(&self.org_id, "elsewhere")
            .await
            .expect("workspace");
        self.tollgate
            .create_key(KeyKind::Api, &self.org_id, Some(&workspace.id), "elsewhere key")
            .await
            .expect("key")
            .secret
            .expose_secret()
            .to_owned()
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|file| file["id"].as_str().expect("id").to_owned())
        .collect()
}

/// A refusal in Anthropic's envelope: its status and error type, and the error.
async fn refusal(response: reqwest::Response) -> ((u16, String), Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], "error", "{body}");
    assert!(body["request_id"].is_string(), "{body}");
    let kind = body["error"]["type"].as_str().expect("error type").to_owned();
    ((status, kind), body["error"].clone())
}

fn kind(status: u16, error_type: &str) -> (u16, String) {
    (status, error_type.to_owned())
}

/// Goal: upload, metadata, a paginated list (both cursor styles), the download refused as
/// Anthropic refuses an uploaded file's, and delete, which takes the bytes with it.
#[tokio::test]
async fn files_are_uploaded_listed_read_and_deleted() {
    let app = spawn_app().await;
    let first = app.upload("notes.txt", "text/plain", b"first file").await;
    let second = app
        .upload("/home/me/scan.pdf", "application/pdf", b"%PDF-1.4 second")
        .await;
    let third = app
        .upload("chart.png", "application/octet-stream", b"\x89PNG third")
        .await;
    let id = |file: &Value| file["id"].as_str().expect("id").to_owned();
    assert!(id(&first).starts_with("file_"), "{first}");
    assert_eq!(first["type"], "file");
    assert_eq!(first["filename"], "notes.txt");
    assert_eq!(first["mime_type"], "text/plain");
    assert_eq!(first["size_bytes"], 10);
    assert_eq!(first["downloadable"], false);
    assert!(first.get("expires_at").is_none(), "{first}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(first["created_at"].as_str().expect("created_at")).is_ok(),
        "{first}"
    );
    // Only the last path component is kept; a generic type is named by the extension.
    assert_eq!(second["filename"], "scan.pdf");
    assert_eq!(third["mime_type"], "image/png");
    assert_eq!(
        std::fs::read(app.file_path(&id(&second)).await).expect("bytes kept"),
        b"%PDF-1.4 second"
    );

    let newest = app.list_files("?limit=2").await;
    assert_eq!(ids(&newest), [id(&third), id(&second)]);
    assert_eq!(newest["has_more"], true);
    assert_eq!(newest["first_id"], json!(id(&third)));
    assert_eq!(newest["last_id"], json!(id(&second)));
    assert_eq!(newest["data"][0], third);
    let next_page = newest["next_page"].as_str().expect("next_page");
    let by_cursor = app.list_files(&format!("?limit=2&page={next_page}")).await;
    let by_after = app
        .list_files(&format!("?limit=2&after_id={}", id(&second)))
        .await;
    assert_eq!(ids(&by_cursor), [id(&first)]);
    assert_eq!(by_cursor, by_after);
    assert_eq!(by_cursor["has_more"], false);
    assert_eq!(by_cursor["next_page"], Value::Null);
    let before = app
        .list_files(&format!("?limit=1&before_id={}", id(&first)))
        .await;
    assert_eq!(ids(&before), [id(&second)]);
    assert_eq!(before["has_more"], true);
    let (refused, _) = app
        .files_refusal(reqwest::Method::GET, "/v1/files?limit=0", &app.api_key)
        .await;
    assert_eq!(refused, kind(400, "invalid_request_error"));

    let metadata = app
        .files_call(
            reqwest::Method::GET,
            &format!("/v1/files/{}", id(&first)),
            &app.api_key,
        )
        .await;
    assert_eq!(metadata.status(), 200);
    assert_eq!(metadata.json::<Value>().await.expect("json"), first);
    let (refused, error) = app
        .files_refusal(
            reqwest::Method::GET,
            &format!("/v1/files/{}/content", id(&first)),
            &app.api_key,
        )
        .await;
    assert_eq!(refused, kind(400, "invalid_request_error"));
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| message.contains("not downloadable")),
        "{error}"
    );

    let deleted = app
        .files_call(
            reqwest::Method::DELETE,
            &format!("/v1/files/{}", id(&second)),
            &app.api_key,
        )
        .await;
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        deleted.json::<Value>().await.expect("json"),
        json!({"id": id(&second), "type": "file_deleted"})
    );
    assert!(
        !app.file_path(&id(&second)).await.exists(),
        "the bytes went with the row"
    );
    let (refused, _) = app
        .files_refusal(
            reqwest::Method::GET,
            &format!("/v1/files/{}", id(&second)),
            &app.api_key,
        )
        .await;
    assert_eq!(refused, kind(404, "not_found_error"));
    assert_eq!(ids(&app.list_files("").await), [id(&third), id(&first)]);
    assert_eq!(
        app.tollgate
            .store()
            .file_storage_used(&app.org_id)
            .await
            .expect("used"),
        10 + 10
    );
}

/// Goal: a file is its workspace's: another workspace's key finds nothing, cannot delete it,
/// and cannot name it in a message.
#[tokio::test]
async fn another_workspace_cannot_reach_a_file() {
    let app = spawn_app().await;
    let file = app.upload("notes.txt", "text/plain", b"private").await;
    let file_id = file["id"].as_str().expect("id");
    let other_key = app.other_workspace_key().await;
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let (refused, _) = app
            .files_refusal(method, &format!("/v1/files/{file_id}"), &other_key)
            .await;
        assert_eq!(refused, kind(404, "not_found_error"));
    }
    let listed: Value = app
        .files_call(reqwest::Method::GET, "/v1/files", &other_key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"], json!([]));
    let message = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &other_key)
        .json(&document_message("fake-sonnet", file_id))
        .send()
        .await
        .expect("sent");
    let (refused, _) = refusal(message).await;
    assert_eq!(refused, kind(400, "invalid_request_error"));
    assert!(app.fake.requests().is_empty(), "nothing went upstream");
    // Still there for its own workspace.
    let own = app
        .files_call(
            reqwest::Method::GET,
            &format!("/v1/files/{file_id}"),
            &app.api_key,
        )
        .await;
    assert_eq!(own.status(), 200);
}

/// Goal: an upload that would take the organization past its quota is refused in
/// Anthropic's words and leaves nothing behind; uploads racing for the last room are
/// admitted exactly as far as it goes; a file over the size limit is 413.
#[tokio::test]
async fn uploads_stay_within_the_organization_quota() {
    let app = spawn_app_with(Options {
        extra_config: "[files]\nmax_file_bytes = 80\norganization_quota_bytes = 100\n",
        ..Options::default()
    })
    .await;
    let kept = app.upload("a.txt", "text/plain", &[b'a'; 60]).await;
    let over = app
        .upload_with(&app.api_key, ("b.txt", "text/plain", vec![b'b'; 50]), None)
        .await;
    let (refused, error) = refusal(over).await;
    assert_eq!(refused, kind(400, "invalid_request_error"));
    assert_eq!(error["details"]["error_code"], "storage_quota_exceeded");
    assert_eq!(ids(&app.list_files("").await), [kept["id"].as_str().expect("id")]);
    let (caller, _) = app.caller_and_model("fake-sonnet").await;
    let workspace_dir = app.config.file_settings().directory.join(&caller.workspace_id);
    assert_eq!(std::fs::read_dir(&workspace_dir).expect("directory").count(), 1);

    let too_large = app
        .upload_with(&app.api_key, ("c.txt", "text/plain", vec![b'c'; 81]), None)
        .await;
    let (refused, _) = refusal(too_large).await;
    assert_eq!(refused, kind(413, "request_too_large"));

    // Freed room is room again; then ten uploads race for three files' worth.
    let kept_id = kept["id"].as_str().expect("id");
    app.files_call(
        reqwest::Method::DELETE,
        &format!("/v1/files/{kept_id}"),
        &app.api_key,
    )
    .await;
    let names: Vec<String> = (0..10).map(|index| format!("r{index}.txt")).collect();
    let racing = names
        .iter()
        .map(|name| app.upload_with(&app.api_key, (name, "text/plain", vec![b'r'; 30]), None));
    let statuses: Vec<u16> = futures_util::future::join_all(racing)
        .await
        .iter()
        .map(|response| response.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|status| **status == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|status| **status == 400).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(
        app.list_files("").await["data"].as_array().expect("data").len(),
        3
    );
    assert_eq!(
        app.tollgate
            .store()
            .file_storage_used(&app.org_id)
            .await
            .expect("used"),
        90
    );
    assert_eq!(std::fs::read_dir(&workspace_dir).expect("directory").count(), 3);
}

/// Goal: `expires_in_seconds` is bounded as Anthropic bounds it; a file past its expiry is
/// not found at once, and the maintenance pass deletes its row and bytes and gives its room
/// back.
#[tokio::test]
async fn an_expired_file_is_gone_and_purged() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let ((status, _), _) = refusal(
        app.upload_with(
            &app.api_key,
            ("a.txt", "text/plain", b"soon".to_vec()),
            Some("60"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    let response = app
        .upload_with(
            &app.api_key,
            ("a.txt", "text/plain", b"soon".to_vec()),
            Some("3600"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let file: Value = response.json().await.expect("json");
    let file_id = file["id"].as_str().expect("id");
    let created = chrono::DateTime::parse_from_rfc3339(file["created_at"].as_str().expect("created_at"))
        .expect("created_at");
    let expires = chrono::DateTime::parse_from_rfc3339(file["expires_at"].as_str().expect("expires_at"))
        .expect("expires_at");
    assert_eq!(expires - created, chrono::Duration::seconds(3600));
    let clock = app.clock.clone().expect("manual clock");
    let report = app.tollgate.maintain().await.expect("maintenance");
    assert_eq!(report.files_purged, 0, "not expired yet");

    clock.advance(chrono::Duration::seconds(3601));
    let gone = app
        .files_call(
            reqwest::Method::GET,
            &format!("/v1/files/{file_id}"),
            &app.api_key,
        )
        .await;
    assert_eq!(gone.status(), 404);
    assert_eq!(app.list_files("").await["data"], json!([]));
    let path = app.file_path(file_id).await;
    assert!(path.exists(), "kept until the maintenance pass");
    let report = app.tollgate.maintain().await.expect("maintenance");
    assert_eq!(report.files_purged, 1);
    assert!(!path.exists());
    assert_eq!(
        app.tollgate
            .store()
            .file_storage_used(&app.org_id)
            .await
            .expect("used"),
        0
    );
}

/// A Messages request whose document block names a file.
fn document_message(model: &str, file_id: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "file", "file_id": file_id}, "title": "Notes"},
            {"type": "text", "text": "Summarise the notes."}
        ]}]
    })
}

/// Goal: the first message naming a file uploads it to the `anthropic` provider with the
/// provider's key and the Files beta; that message, the next and a `count_tokens` carry the
/// provider's id, and nothing else of the body changes; deleting the file deletes that copy.
#[tokio::test]
async fn a_file_reaches_an_anthropic_upstream_by_the_id_it_gave_once_uploaded() {
    let app = spawn_app().await;
    let file = app
        .upload("notes.txt", "text/plain", b"The notes say hello.")
        .await;
    let file_id = file["id"].as_str().expect("id");
    for _ in 0..2 {
        let response = app.post_messages(&document_message("fake-sonnet", file_id)).await;
        assert_eq!(response.status(), 200);
    }
    let mut count_body = document_message("fake-sonnet", file_id);
    count_body.as_object_mut().expect("object").remove("max_tokens");
    let counted = app
        .client
        .post(app.url("/v1/messages/count_tokens"))
        .header("x-api-key", &app.api_key)
        .json(&count_body)
        .send()
        .await
        .expect("sent");
    assert_eq!(counted.status(), 200);
    let requests = app.fake.requests();
    let uploads: Vec<_> = requests
        .iter()
        .filter(|request| request.path == "/v1/files")
        .collect();
    assert_eq!(uploads.len(), 1, "uploaded at the first use only");
    let header = |name: &str| {
        uploads[0]
            .headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.clone())
    };
    assert_eq!(header("x-api-key").as_deref(), Some("provider-secret"));
    assert_eq!(header("anthropic-beta").as_deref(), Some(FILES_BETA));
    let multipart = uploads[0].body.as_str().expect("multipart text");
    assert!(multipart.contains("filename=\"notes.txt\""), "{multipart}");
    assert!(multipart.contains("The notes say hello."), "{multipart}");
    let messages: Vec<_> = requests
        .iter()
        .filter(|request| request.path == "/v1/messages")
        .collect();
    assert_eq!(messages.len(), 2);
    let provider_id = messages[0].body["messages"][0]["content"][0]["source"]["file_id"]
        .as_str()
        .expect("file id")
        .to_owned();
    assert!(provider_id.starts_with("file_fake"), "{provider_id}");
    let expected = document_message("claude-sonnet-4-6", &provider_id);
    assert_eq!(messages[0].body, expected);
    assert_eq!(messages[1].body, messages[0].body);
    assert_ne!(provider_id, file_id);
    let count = requests
        .iter()
        .find(|request| request.path == "/v1/messages/count_tokens")
        .expect("counted upstream");
    assert_eq!(
        count.body["messages"][0]["content"][0]["source"]["file_id"],
        json!(provider_id),
        "count_tokens names the file as the provider knows it"
    );

    // Deleting the file deletes the provider's copy.
    let deleted = app
        .files_call(
            reqwest::Method::DELETE,
            &format!("/v1/files/{file_id}"),
            &app.api_key,
        )
        .await;
    assert_eq!(deleted.status(), 200);
    let deletions: Vec<_> = app
        .fake
        .requests()
        .into_iter()
        .filter(|request| request.path.starts_with("/v1/files/"))
        .map(|request| request.path)
        .collect();
    assert_eq!(deletions, [format!("/v1/files/{provider_id}")]);
}

/// Goal: a request naming a file that admission would refuse anyway uploads nothing: a
/// `max_tokens` above the model's limit is refused in Anthropic's words before the file
/// goes to the provider, and an id no file has is Anthropic's 400, with nothing sent.
#[tokio::test]
async fn a_refused_request_naming_a_file_uploads_nothing() {
    let app = spawn_app_with(Options {
        extra_config: r#"
        [models.fake-capped]
        class = "sonnet"
        provider = "fake"
        upstream_model = "claude-sonnet-4-6"
        input = "3"
        output = "15"
        max_output_tokens = 16
        "#,
        ..Options::default()
    })
    .await;
    let file = app
        .upload("notes.txt", "text/plain", b"The notes say hello.")
        .await;
    let file_id = file["id"].as_str().expect("id");
    let response = app.post_messages(&document_message("fake-capped", file_id)).await;
    let ((status, kind), envelope) = refusal(response).await;
    assert_eq!(
        (status, kind.as_str()),
        (400, "invalid_request_error"),
        "{envelope}"
    );
    assert_eq!(
        envelope["message"],
        "max_tokens: 32 > 16, which is the maximum allowed number of output tokens for fake-capped"
    );
    let response = app
        .post_messages(&document_message("fake-sonnet", "file_011CNha8iCJcU1wXNR6q4V8w"))
        .await;
    let ((status, _), envelope) = refusal(response).await;
    assert_eq!(status, 400, "{envelope}");
    assert_eq!(
        envelope["message"],
        "File not found: file_011CNha8iCJcU1wXNR6q4V8w"
    );
    assert!(
        app.fake.requests().is_empty(),
        "nothing reached the provider: {:?}",
        app.fake
            .requests()
            .iter()
            .map(|request| &request.path)
            .collect::<Vec<_>>()
    );
}

/// Goal: a file read by id is reserved for like the body: its bytes bound its input tokens,
/// so a file the credit cannot cover is refused before anything is sent, and a small one
/// goes.
#[tokio::test]
async fn a_named_file_is_reserved_for() {
    let app = spawn_app_with(Options {
        starter_grant_usd: "1.00",
        ..Options::default()
    })
    .await;
    // 200,000 tokens at most, at $6 per million (the dearest input kind): $1.20.
    let large = app.upload("large.txt", "text/plain", &[b'x'; 200_000]).await;
    let response = app
        .post_messages(&document_message(
            "fake-sonnet",
            large["id"].as_str().expect("id"),
        ))
        .await;
    let (refused, error) = refusal(response).await;
    assert_eq!(refused, kind(400, "invalid_request_error"), "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| message.contains("credit balance is too low")),
        "{error}"
    );
    assert!(
        app.fake
            .requests()
            .iter()
            .all(|request| request.path != "/v1/messages"),
        "nothing was generated"
    );
    let small = app.upload("small.txt", "text/plain", &[b'x'; 1_000]).await;
    let response = app
        .post_messages(&document_message(
            "fake-sonnet",
            small["id"].as_str().expect("id"),
        ))
        .await;
    assert_eq!(response.status(), 200);
}

/// Goal: an upstream that takes no file ids gets the file's bytes: the simulated model
/// reads them (its input count grows with them) and an OpenAI-compatible upstream gets an
/// image as a data URL.
#[tokio::test]
async fn a_file_reaches_other_upstreams_inline() {
    let app = spawn_app().await;
    let text = "word ".repeat(8_000);
    let file = app.upload("long.txt", "text/plain", text.as_bytes()).await;
    let response = app
        .post_messages(&document_message(
            "claude-sonnet-4-6",
            file["id"].as_str().expect("id"),
        ))
        .await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.expect("json");
    let input_tokens = reply["usage"]["input_tokens"].as_u64().expect("input tokens");
    assert!(input_tokens >= 10_000, "the 40,000 bytes were read: {reply}");

    let png = b"\x89PNG\r\n\x1a\nnot really an image".to_vec();
    let image = app.upload("dot.png", "image/png", &png).await;
    let body = json!({
        "model": "fake-gpt",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": image["id"]}},
            {"type": "text", "text": "What is this?"}
        ]}]
    });
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    use base64::Engine as _;
    let data_url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    let sent = app
        .fake
        .requests()
        .into_iter()
        .find(|request| request.path == "/v1/chat/completions")
        .expect("the chat upstream was called");
    assert_eq!(
        sent.body["messages"][0]["content"][0]["image_url"]["url"], data_url,
        "{}",
        sent.body
    );
    assert!(
        app.fake
            .requests()
            .iter()
            .all(|request| request.path != "/v1/files"),
        "nothing is uploaded to a provider that takes no file ids"
    );
}

/// Goal: the official `anthropic` SDK's Files API (upload, list, retrieve_metadata, delete)
/// works unchanged, and its Messages call with a file source is answered.
#[tokio::test]
async fn the_anthropic_sdk_uses_the_files_api() {
    let app = spawn_app().await;
    let cases = crate::sdk::run_script(&app, "anthropic_files.py").await;
    let uploaded = &cases["uploaded"];
    assert!(
        uploaded["id"].as_str().is_some_and(|id| id.starts_with("file_")),
        "{uploaded}"
    );
    assert_eq!(uploaded["filename"], "notes.txt");
    assert_eq!(uploaded["size_bytes"], 19);
    assert_eq!(cases["listed"]["ids"], json!([uploaded["id"]]));
    assert_eq!(cases["retrieved"]["mime_type"], "text/plain");
    assert_eq!(cases["message"]["type"], "message");
    assert!(
        cases["message"]["input_tokens"]
            .as_u64()
            .is_some_and(|tokens| tokens > 0)
    );
    assert_eq!(cases["deleted"]["type"], "file_deleted");
    assert_eq!(cases["missing"]["status"], 404);
}

/// Goal: an upload that is not one (a JSON body, a form without its `file` part, an
/// expiry that is not a number of seconds) is refused in Anthropic's envelope as a 400,
/// and nothing is stored.
#[tokio::test]
async fn a_malformed_upload_is_refused_and_stores_nothing() {
    let app = spawn_app().await;
    let post = || {
        app.client
            .post(app.url("/v1/files"))
            .header("x-api-key", &app.api_key)
            .header("anthropic-version", "2023-06-01")
    };
    let (refused, error) = refusal(
        post()
            .json(&json!({"file": "notes.txt"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(refused, kind(400, "invalid_request_error"));
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| message.contains("multipart")),
        "{error}"
    );

    let form = reqwest::multipart::Form::new().text("expires_in_seconds", "3600");
    let (refused, error) = refusal(post().multipart(form).send().await.expect("sent")).await;
    assert_eq!(refused, kind(400, "invalid_request_error"));
    assert_eq!(error["message"], "file: Field required");

    let bad_expiry = app
        .upload_with(
            &app.api_key,
            ("a.txt", "text/plain", b"hello".to_vec()),
            Some("an hour"),
        )
        .await;
    assert_eq!(refusal(bad_expiry).await.0, kind(400, "invalid_request_error"));

    assert!(ids(&app.list_files("").await).is_empty(), "nothing was stored");
}
