//! `FakeSmtp`: a small real SMTP server on loopback (RFC 5321's plain dialogue: EHLO or
//! HELO, MAIL FROM, RCPT TO, DATA with dot-unstuffing, RSET, NOOP, QUIT) that accepts every
//! message and keeps it, so a test reads what an SMTP client such as `lettre` actually sent.
//! No authentication: it stands for a relay. `start_tls` makes it a relay that requires
//! STARTTLS (RFC 3207) before any mail, with the test kit's certificate for 127.0.0.1
//! (`tls/`, signed by the test authority `TEST_CA_PEM_PATH` names).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The test authority's certificate (PEM), which signed the test kit's certificate for
/// 127.0.0.1 and `localhost`; valid until 2126.
pub const TEST_CA_PEM_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tls/ca.pem");
const SERVER_PEM: &[u8] = include_bytes!("../tls/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("../tls/server.key");

/// One message as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (MAIL FROM), without angle brackets.
    pub from: String,
    /// The envelope recipients (RCPT TO).
    pub to: Vec<String>,
    /// The message as sent after DATA: headers, a blank line, the body; CRLF line ends.
    pub data: String,
    /// Whether it came over a connection upgraded by STARTTLS.
    pub secured: bool,
}

impl ReceivedMail {
    /// The value of the first header named `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(found) = value.as_mut() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    found.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((header, rest)) = line.split_once(':')
                && header.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_owned());
            }
        }
        value
    }

    /// What follows the headers.
    pub fn body(&self) -> String {
        self.data
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }
}

/// The server; it stops when dropped.
pub struct FakeSmtp {
    addr: SocketAddr,
    mails: Arc<Mutex<Vec<ReceivedMail>>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeSmtp {
    /// A plain relay.
    pub async fn start() -> FakeSmtp {
        FakeSmtp::serve(None).await
    }

    /// A relay that offers STARTTLS and refuses mail until the connection is upgraded.
    pub async fn start_tls() -> FakeSmtp {
        let certificates = CertificateDer::pem_slice_iter(SERVER_PEM)
            .collect::<Result<Vec<_>, _>>()
            .expect("the test certificate");
        let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).expect("the test key");
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .expect("a TLS configuration");
        FakeSmtp::serve(Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(tls: Option<TlsAcceptor>) -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the SMTP server");
        let addr = listener.local_addr().expect("bound");
        let mails: Arc<Mutex<Vec<ReceivedMail>>> = Arc::default();
        let kept = mails.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, tls) = (kept.clone(), tls.clone());
                tokio::spawn(async move {
                    let _ = session(stream, kept, tls).await;
                });
            }
        });
        FakeSmtp { addr, mails, server }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message received so far, in order.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.mails.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn address(argument: &str) -> String {
    let argument = argument.trim();
    let start = argument.find('<').map_or(0, |at| at + 1);
    let end = argument.rfind('>').unwrap_or(argument.len());
    argument.get(start..end).unwrap_or_default().to_owned()
}

/// How a dialogue ended.
enum Ended {
    Closed,
    /// The client asked for STARTTLS and was told to go ahead.
    StartTls,
}

/// One connection: the plain dialogue, and after STARTTLS a new one over TLS (the client
/// starts again with EHLO, RFC 3207 4.2).
async fn session(
    stream: TcpStream,
    mails: Arc<Mutex<Vec<ReceivedMail>>>,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<()> {
    let mut plain = BufReader::new(stream);
    plain.write_all(b"220 fake-smtp ESMTP ready\r\n").await?;
    let Ended::StartTls = dialogue(&mut plain, &mails, tls.is_some(), false).await? else {
        return Ok(());
    };
    let Some(acceptor) = tls else {
        return Ok(());
    };
    // The client sends nothing between the go-ahead and its handshake: nothing is buffered.
    let secured = acceptor.accept(plain.into_inner()).await?;
    dialogue(&mut BufReader::new(secured), &mails, false, true).await?;
    Ok(())
}

async fn dialogue<S: AsyncBufRead + AsyncWrite + Unpin>(
    stream: &mut S,
    mails: &Mutex<Vec<ReceivedMail>>,
    requires_tls: bool,
    secured: bool,
) -> std::io::Result<Ended> {
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(Ended::Closed);
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            if requires_tls {
                b"250-fake-smtp greets you\r\n250-8BITMIME\r\n250-STARTTLS\r\n250 SMTPUTF8\r\n"
            } else {
                b"250-fake-smtp greets you\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
            }
        } else if upper.starts_with("HELO") {
            b"250 fake-smtp\r\n"
        } else if upper == "STARTTLS" && requires_tls {
            stream.write_all(b"220 2.0.0 Ready to start TLS\r\n").await?;
            return Ok(Ended::StartTls);
        } else if requires_tls && (upper.starts_with("MAIL") || upper.starts_with("RCPT") || upper == "DATA")
        {
            b"530 5.7.0 Must issue a STARTTLS command first\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = address(command.get(10..).unwrap_or_default());
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(command.get(8..).unwrap_or_default()));
            b"250 OK\r\n"
        } else if upper == "DATA" {
            stream
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            stream.flush().await?;
            let mut data = String::new();
            loop {
                line.clear();
                if stream.read_line(&mut line).await? == 0 {
                    return Ok(Ended::Closed);
                }
                let text = line.trim_end_matches(['\r', '\n']);
                if text == "." {
                    break;
                }
                // Dot-unstuffing (RFC 5321 4.5.2).
                data.push_str(text.strip_prefix('.').unwrap_or(text));
                data.push_str("\r\n");
            }
            mails
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ReceivedMail {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                    secured,
                });
            b"250 OK: queued\r\n"
        } else if upper == "RSET" {
            from.clear();
            to.clear();
            b"250 OK\r\n"
        } else if upper == "NOOP" {
            b"250 OK\r\n"
        } else if upper == "QUIT" {
            stream.write_all(b"221 Bye\r\n").await?;
            stream.flush().await?;
            return Ok(Ended::Closed);
        } else {
            b"502 Command not implemented\r\n"
        };
        stream.write_all(reply).await?;
        stream.flush().await?;
    }
}
