//! The clients over TLS, against a server that offers HTTP/2 and lets one connection carry
//! one stream at a time (providers' edges set such a limit, if higher). The certificates in
//! test kit's `tls/` are a test authority and a certificate it signed for 127.0.0.1, valid
//! until 2126.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Version};
use bytes::Bytes;
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tollgate_upstream::anthropic::{AnthropicClient, AnthropicConfig};
use tollgate_upstream::{Provider, UpstreamError, UpstreamReply};

use super::{STREAM_BODY, event_stream_response, request};

const CA_PEM: &[u8] = include_bytes!("../../../tollgate-testkit/tls/ca.pem");
const SERVER_PEM: &[u8] = include_bytes!("../../../tollgate-testkit/tls/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("../../../tollgate-testkit/tls/server.key");

/// A TLS server offering `h2` and `http/1.1` whose HTTP/2 connections allow one stream at
/// a time. Every request is answered with `STREAM_BODY`'s first event at once and the rest
/// once `released` turns true; the protocol version of each request is kept in `versions`.
async fn serve_tls(versions: Arc<Mutex<Vec<Version>>>, released: watch::Receiver<bool>) -> String {
    let certificates = CertificateDer::pem_slice_iter(SERVER_PEM)
        .collect::<Result<Vec<_>, _>>()
        .expect("the test certificate");
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).expect("the test key");
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .expect("a TLS configuration");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, versions, released) = (acceptor.clone(), Arc::clone(&versions), released.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    versions.lock().expect("versions").push(request.version());
                    let body = held_stream(released.clone());
                    async move { Ok::<_, Infallible>(event_stream_response(body)) }
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http2().max_concurrent_streams(1);
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    format!("https://{address}")
}

/// `STREAM_BODY`: its first event now, the rest once `released` is true.
fn held_stream(mut released: watch::Receiver<bool>) -> Body {
    let (first, rest) = STREAM_BODY.split_at(STREAM_BODY.find("\n\n").expect("an event") + 2);
    let first =
        futures_util::stream::once(async move { Ok::<_, Infallible>(Bytes::from_static(first.as_bytes())) });
    let rest = futures_util::stream::once(async move {
        let _ = released.wait_for(|released| *released).await;
        Ok(Bytes::from_static(rest.as_bytes()))
    });
    Body::from_stream(first.chain(rest))
}

fn tls_client(base_url: String, ca_pem: Option<&[u8]>) -> Result<AnthropicClient, UpstreamError> {
    AnthropicClient::new(AnthropicConfig {
        base_url,
        api_key: Some("sk-ant-upstream".to_owned()),
        ca_pem: ca_pem.map(<[u8]>::to_vec),
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
    })
}

#[tokio::test]
async fn streams_at_once_each_get_their_own_connection_although_http2_is_offered() {
    let versions = Arc::new(Mutex::new(Vec::new()));
    let (release, released) = watch::channel(false);
    let base_url = serve_tls(Arc::clone(&versions), released).await;
    let provider = Provider::Anthropic(tls_client(base_url, Some(CA_PEM)).expect("a valid config"));

    // Three streams held open at once. On one HTTP/2 connection that allows one stream, the
    // second call would wait for the first stream to end, which it does not until released.
    let mut open = Vec::new();
    for call in 1..=3 {
        let reply = tokio::time::timeout(Duration::from_secs(3), provider.call(request(true)))
            .await
            .unwrap_or_else(|_| panic!("call {call} was not answered while the others stream"));
        let Ok(UpstreamReply::Stream(mut events)) = reply else {
            panic!("call {call}: expected a stream, got {reply:?}");
        };
        let first = events.next().await.expect("a first event").expect("not an error");
        assert_eq!(first.event, "message_start");
        open.push(events);
    }
    release.send(true).expect("the server is up");
    for events in open {
        let rest: Vec<_> = events.collect().await;
        let last = rest.last().expect("more events").as_ref().expect("not an error");
        assert_eq!(last.event, "message_stop");
    }
    assert_eq!(*versions.lock().expect("versions"), vec![Version::HTTP_11; 3]);
}

#[tokio::test]
async fn an_upstream_signed_by_a_private_authority_is_trusted_only_with_its_certificate() {
    let (_release, released) = watch::channel(true);
    let base_url = serve_tls(Arc::new(Mutex::new(Vec::new())), released).await;
    let untrusting = Provider::Anthropic(tls_client(base_url, None).expect("a valid config"));
    match untrusting.call(request(false)).await {
        Err(UpstreamError::Connect(message)) => assert!(message.contains("certificate"), "{message}"),
        other => panic!("expected a refused certificate, got {other:?}"),
    }

    let bad_bundles: [&[u8]; 3] = [
        b"not a certificate",
        b"-----BEGIN CERTIFICATE-----\n!!! not base64 !!!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    ];
    for bundle in bad_bundles {
        let error =
            tls_client("https://127.0.0.1:1".to_owned(), Some(bundle)).expect_err("no usable certificate");
        assert!(
            matches!(&error, UpstreamError::Connect(message) if message.contains("CA certificates")),
            "{}: {error:?}",
            String::from_utf8_lossy(bundle)
        );
    }
}
