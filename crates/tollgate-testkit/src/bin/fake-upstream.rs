//! `fake-upstream`: runs an unrecorded `FakeUpstream` as its own process, so benchmarks can
//! point the gateway at it without a test harness. Benchmark use only, never production.
//!
//! Usage: `fake-upstream [--listen 127.0.0.1:9000] [--output-tokens N] [--event-delay-ms N] [--latency-ms N]
//! [--gemini-listen ADDR] [--bedrock-listen ADDR] [--vertex-listen ADDR
//! --vertex-service-account-file PATH]`. `--gemini-listen` also serves a fake Gemini API
//! (`FakeGemini`, its key `FAKE_GEMINI_API_KEY`) on ADDR; `--bedrock-listen` and
//! `--vertex-listen` a fake Bedrock and Vertex AI (`CloudMode::Bench`: Bedrock takes unsigned
//! requests, Vertex `BENCH_VERTEX_TOKEN`), answering as the main fake does; the Vertex
//! service account's JSON key, whose token endpoint is the fake's, is written to PATH.
//! `--latency-ms` waits that long before every answer, as a model does before its first
//! byte.

use std::fmt::Display;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use tollgate_testkit::{
    Behavior, CloudMode, FakeBedrock, FakeGemini, FakeUpstream, FakeVertex, Recording, Reply,
};

const USAGE: &str = "usage: fake-upstream [--listen 127.0.0.1:9000] [--output-tokens N] [--event-delay-ms N] [--latency-ms N] [--gemini-listen ADDR] [--bedrock-listen ADDR] [--vertex-listen ADDR --vertex-service-account-file PATH]";

struct Args {
    listen: SocketAddr,
    reply: Reply,
    gemini_listen: Option<SocketAddr>,
    bedrock_listen: Option<SocketAddr>,
    vertex_listen: Option<SocketAddr>,
    vertex_service_account_file: Option<std::path::PathBuf>,
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
    upstream.set_behavior(Behavior::Ok(args.reply.clone()));
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
    let _bedrock = match args.bedrock_listen {
        Some(addr) => match FakeBedrock::bind(addr, CloudMode::Bench).await {
            Ok(bedrock) => {
                bedrock.upstream().set_behavior(Behavior::Ok(args.reply.clone()));
                Some(bedrock)
            }
            Err(error) => {
                eprintln!("fake-upstream: cannot listen on {addr} for the fake Bedrock: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let _vertex = match args.vertex_listen {
        Some(addr) => match FakeVertex::bind(addr, CloudMode::Bench).await {
            Ok(vertex) => {
                vertex.upstream().set_behavior(Behavior::Ok(args.reply.clone()));
                if let Some(path) = &args.vertex_service_account_file
                    && let Err(error) = std::fs::write(path, vertex.service_account_json())
                {
                    eprintln!("fake-upstream: cannot write {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
                Some(vertex)
            }
            Err(error) => {
                eprintln!("fake-upstream: cannot listen on {addr} for the fake Vertex: {error}");
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
        bedrock_listen: None,
        vertex_listen: None,
        vertex_service_account_file: None,
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--listen" => parsed.listen = flag_value(&flag, &mut args)?,
            "--gemini-listen" => parsed.gemini_listen = Some(flag_value(&flag, &mut args)?),
            "--bedrock-listen" => parsed.bedrock_listen = Some(flag_value(&flag, &mut args)?),
            "--vertex-listen" => parsed.vertex_listen = Some(flag_value(&flag, &mut args)?),
            "--vertex-service-account-file" => {
                parsed.vertex_service_account_file = Some(flag_value(&flag, &mut args)?);
            }
            "--output-tokens" => parsed.reply.output_tokens = flag_value(&flag, &mut args)?,
            "--event-delay-ms" => {
                parsed.reply.event_delay = Duration::from_millis(flag_value(&flag, &mut args)?);
            }
            "--latency-ms" => parsed.reply.latency = Duration::from_millis(flag_value(&flag, &mut args)?),
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
