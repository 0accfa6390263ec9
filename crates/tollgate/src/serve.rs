//! The HTTP server: accepts connections and serves the router on each, HTTP/1.1 or HTTP/2
//! with prior knowledge, until shutdown; then it stops accepting and lets the connections
//! in flight finish their requests.
//!
//! It exists instead of `axum::serve` for memory per connection, which 10,000 open streams
//! multiply. `axum::serve` tells the protocols apart by reading the first 24 bytes of every
//! connection (hyper-util's `auto` builder) and handing them back to hyper, whose HTTP/1
//! reader then grows its 8 KiB read buffer to 16 KiB to take the rest of the request after
//! them. Here the first bytes are peeked, not read: an HTTP/1.1 connection goes straight to
//! hyper's HTTP/1 server with nothing to hand back, and only a connection that opens like
//! HTTP/2's preface goes through the `auto` builder.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// What every HTTP/2 connection opens with (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `router` on `listener` until `shutdown` completes, then waits for the open
/// connections to finish the requests they have begun.
pub(crate) async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    // Tells connections that have not sent a byte yet to close: the graceful shutdown only
    // reaches a connection once hyper serves it, and waits for every connection it watches.
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let router = router.clone();
        let watcher = graceful.watcher();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_connection(tcp, peer, router, watcher, stopping).await {
                tracing::trace!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    graceful.shutdown().await;
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Events of a stream are small writes spaced out in time: Nagle's algorithm would hold
    // each back until the previous one is acknowledged. Failing to set it only costs speed.
    let _ = tcp.set_nodelay(true);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut first = [0_u8; HTTP2_PREFACE.len()];
    let peeked = tokio::select! {
        peeked = tcp.peek(&mut first) => peeked?,
        _ = stopping.wait_for(|stop| *stop) => return Ok(()),
    };
    if peeked == 0 {
        return Ok(());
    }
    let io = TokioIo::new(tcp);
    if first[..peeked] == HTTP2_PREFACE[..peeked] {
        // HTTP/2, or too few bytes yet to tell: the `auto` builder reads until it knows.
        let builder = auto::Builder::new(TokioExecutor::new());
        watcher
            .watch(builder.serve_connection(io, service).into_owned())
            .await
    } else {
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        Ok(watcher.watch(connection).await?)
    }
}

/// Accepting fails for a connection reset before it was accepted (nothing to do) or for a
/// lack of file descriptors: waiting lets open connections close instead of spinning.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
