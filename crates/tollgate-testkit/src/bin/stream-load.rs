//! Benchmark client for streaming: holds many concurrent SSE streams of `POST /v1/messages`
//! open against one address and reports how many completed, how many were open (and
//! streaming) at once, and how late their events were.
//!
//! `stream-load --addr 127.0.0.1:PORT --streams 10000 [--key KEY] [--model M] [--ramp-ms 2000]`
//!
//! Raw HTTP/1.1 over tokio, one connection per stream (`Connection: close`), so that ten
//! thousand streams cost ten thousand sockets and no client-side pooling hides anything.
//! Printing the report is this binary's purpose.
#![allow(clippy::print_stdout, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Options {
    addr: SocketAddr,
    streams: usize,
    key: String,
    model: String,
    ramp: Duration,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        addr: "127.0.0.1:8080".parse().map_err(|_| "bad default address")?,
        streams: 1_000,
        key: String::new(),
        model: "bench-model".to_owned(),
        ramp: Duration::from_millis(2_000),
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let value = arguments.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => options.addr = value.parse().map_err(|_| format!("bad --addr {value}"))?,
            "--streams" => options.streams = value.parse().map_err(|_| format!("bad --streams {value}"))?,
            "--key" => options.key = value,
            "--model" => options.model = value,
            "--ramp-ms" => {
                options.ramp =
                    Duration::from_millis(value.parse().map_err(|_| format!("bad --ramp-ms {value}"))?)
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(options)
}

/// What one stream saw: seconds from its start to each `content_block_delta`, or an error.
type StreamResult = Result<Vec<f64>, String>;

/// How many streams were at one stage at once, and the most there ever were: a peak of
/// memory is only as meaningful as the concurrency behind it.
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    const fn new() -> Gauge {
        Gauge {
            now: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    fn enter(&'static self) -> Entered {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Entered(self)
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

/// One stream counted in a gauge until dropped.
struct Entered(&'static Gauge);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connected streams.
static OPEN: Gauge = Gauge::new();
/// Streams that have had their first event and not yet ended.
static STREAMING: Gauge = Gauge::new();

async fn one_stream(addr: SocketAddr, request: std::sync::Arc<Vec<u8>>) -> StreamResult {
    let started = Instant::now();
    let mut socket = TcpStream::connect(addr)
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let _open = OPEN.enter();
    let mut streaming = None;
    socket
        .write_all(&request)
        .await
        .map_err(|error| format!("write: {error}"))?;
    let mut buffer = Vec::with_capacity(8_192);
    let mut chunk = [0_u8; 4_096];
    let mut deltas = Vec::new();
    let marker = b"event: content_block_delta";
    let mut scanned = 0;
    loop {
        let read = socket
            .read(&mut chunk)
            .await
            .map_err(|error| format!("read: {error}"))?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
        while let Some(position) = buffer[scanned..]
            .windows(marker.len())
            .position(|window| window == marker)
        {
            deltas.push(started.elapsed().as_secs_f64());
            streaming.get_or_insert_with(|| STREAMING.enter());
            scanned += position + marker.len();
        }
    }
    let text = String::from_utf8_lossy(&buffer);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(text.lines().next().unwrap_or("no status line").to_owned());
    }
    if !text.contains("event: message_stop") {
        return Err("stream ended without message_stop".to_owned());
    }
    Ok(deltas)
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("stream-load: {error}");
            std::process::exit(2);
        }
    };
    let body = format!(
        r#"{{"model":"{}","max_tokens":64,"stream":true,"messages":[{{"role":"user","content":"Hello"}}]}}"#,
        options.model
    );
    let request = std::sync::Arc::new(
        format!(
            "POST /v1/messages HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\nx-api-key: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{}",
            options.addr,
            options.key,
            body.len(),
            body
        )
        .into_bytes(),
    );
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(options.streams);
    for index in 0..options.streams {
        let delay = options.ramp.mul_f64(index as f64 / options.streams.max(1) as f64);
        let request = request.clone();
        let addr = options.addr;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            one_stream(addr, request).await
        }));
    }
    let mut first_event = Vec::new();
    let mut gaps = Vec::new();
    let mut errors: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok(Ok(deltas)) => {
                if let Some(first) = deltas.first() {
                    first_event.push(*first);
                }
                gaps.extend(deltas.windows(2).map(|pair| pair[1] - pair[0]));
            }
            Ok(Err(error)) => *errors.entry(error).or_default() += 1,
            Err(error) => *errors.entry(format!("task: {error}")).or_default() += 1,
        }
    }
    first_event.sort_by(f64::total_cmp);
    gaps.sort_by(f64::total_cmp);
    let mean_gap = if gaps.is_empty() {
        0.0
    } else {
        gaps.iter().sum::<f64>() / gaps.len() as f64
    };
    println!(
        "STREAMS completed={} errors={} wall={:.2}s peak_open={} peak_streaming={} first_event_p50={:.1}ms first_event_p99={:.1}ms gap_mean={:.2}ms gap_p99={:.2}ms",
        first_event.len(),
        errors.values().sum::<usize>(),
        started.elapsed().as_secs_f64(),
        OPEN.peak(),
        STREAMING.peak(),
        percentile(&first_event, 0.5) * 1e3,
        percentile(&first_event, 0.99) * 1e3,
        mean_gap * 1e3,
        percentile(&gaps, 0.99) * 1e3,
    );
    for (error, count) in errors.iter().take(5) {
        println!("  {count} × {error}");
    }
}
