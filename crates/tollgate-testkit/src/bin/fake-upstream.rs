//! `fake-upstream`: runs an unrecorded `FakeUpstream` as its own process, so benchmarks can
//! point the gateway at it without a test harness. Benchmark use only, never production.
//!
//! Usage: `fake-upstream [--listen 127.0.0.1:9000] [--output-tokens N] [--event-delay-ms N]
//! [--gemini-listen ADDR]`; the last also serves a fake Gemini API (`FakeGemini`, its key
//! `FAKE_GEMINI_API_KEY`) on ADDR.

use std::fmt::Display;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use tollgate_testkit::{Behavior, FakeGemini, FakeUpstream, Recording, Reply};

const USAGE: &str = "usage: fake-upstream [--listen 127.0.0.1:9000] [--output-tokens N] [--event-delay-ms N] [--gemini-listen ADDR]";

struct Args {
    listen: SocketAddr,
    reply: Reply,
    gemini_listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("fake-upstream: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Recording would grow without bound under benchmark load.
    let upstream = match FakeUpstream::bind(args.listen, Recording::Disabled).await {
        Ok(upstream) => upstream,
        Err(error) => {
            eprintln!("fake-upstream: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    upstream.set_behavior(Behavior::Ok(args.reply));
    let _gemini = match args.gemini_listen {
        Some(addr) => match FakeGemini::bind(addr, Recording::Disabled).await {
            Ok(gemini) => Some(gemini),
            Err(error) => {
                eprintln!("fake-upstream: cannot listen on {addr} for the fake Gemini: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    announce(&upstream);
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("fake-upstream: cannot wait for ctrl-c: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[allow(
    clippy::print_stdout,
    reason = "the benchmark harness reads the bound address from stdout, which matters with port 0"
)]
fn announce(upstream: &FakeUpstream) {
    println!("fake-upstream listening on {}", upstream.base_url());
}

/// The parsed flags, or `None` when help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
        reply: Reply::default(),
        gemini_listen: None,
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--listen" => parsed.listen = flag_value(&flag, &mut args)?,
            "--gemini-listen" => parsed.gemini_listen = Some(flag_value(&flag, &mut args)?),
            "--output-tokens" => parsed.reply.output_tokens = flag_value(&flag, &mut args)?,
            "--event-delay-ms" => {
                parsed.reply.event_delay = Duration::from_millis(flag_value(&flag, &mut args)?);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Some(parsed))
}

/// Takes and parses the value following `flag`.
fn flag_value<T>(flag: &str, args: &mut impl Iterator<Item = String>) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
    value.parse().map_err(|error| format!("{flag} {value}: {error}"))
}
