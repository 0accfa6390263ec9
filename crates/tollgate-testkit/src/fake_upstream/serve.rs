//! Accepts connections and serves the router on each (HTTP/1.1, or HTTP/2 with prior
//! knowledge). It exists instead of `axum::serve` for one reason: a handler must be able to
//! drop its own connection without answering, which `Behavior::Hangup` needs and an axum
//! handler alone cannot do.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

/// Lets a handler ask for its connection to be dropped. Each connection's requests carry
/// one as a request extension.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionHangup(Arc<Notify>);

impl ConnectionHangup {
    pub(crate) fn fire(&self) {
        // `notify_one` keeps a permit if the connection task isn't waiting yet, so the
        // request can't be lost between the handler and the task.
        self.0.notify_one();
    }
}

pub(crate) async fn accept_loop(listener: TcpListener, router: Router) {
    loop {
        match listener.accept().await {
            Ok((tcp, _peer)) => {
                tokio::spawn(serve_connection(tcp, router.clone()));
            }
            // Accept fails transiently under benchmark load (out of file descriptors); back
            // off briefly instead of spinning or giving up.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

async fn serve_connection(tcp: TcpStream, router: Router) {
    // SSE events are small writes spaced out in time; Nagle's algorithm would hold them
    // back waiting for ACKs and distort latency. Failing to set it only costs speed.
    let _ = tcp.set_nodelay(true);
    let hangup = ConnectionHangup(Arc::new(Notify::new()));
    let request_hangup = hangup.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(request_hangup.clone());
        router.clone().oneshot(request)
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::select! {
        // Connection errors (client resets, bad requests) concern only that client.
        _ = connection => {}
        // Dropping the connection future closes the socket with the request unanswered.
        () = hangup.0.notified() => {}
    }
}
