//! `FakeWebhook`: a real HTTP server on loopback that receives alert webhooks, keeps each
//! request's headers and raw body (so a test verifies the signature over exactly what was
//! sent), and answers with a status the test sets (200 by default; 500 to make the sender
//! retry).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

/// One webhook as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedWebhook {
    /// Header names in lowercase.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<ReceivedWebhook>>,
    status: AtomicU16,
}

/// The receiver; it stops when dropped.
pub struct FakeWebhook {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeWebhook {
    pub async fn start() -> FakeWebhook {
        let shared = Arc::new(Shared {
            received: Mutex::default(),
            status: AtomicU16::new(200),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the webhook receiver");
        let addr = listener.local_addr().expect("bound");
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeWebhook { addr, shared, server }
    }

    /// The URL to register as a destination.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers every later request with `status`.
    pub fn answer_with(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Every webhook received so far, in order.
    pub fn received(&self) -> Vec<ReceivedWebhook> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FakeWebhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    shared
        .received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(ReceivedWebhook {
            headers,
            body: body.to_vec(),
        });
    StatusCode::from_u16(shared.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
}
