//! Typed configuration, layered: built-in defaults (`config/defaults.toml`) → a TOML file
//! (`--config`) → `TOLLGATE_*` environment variables (`__` nests) → command-line flags.
//! Parsing is a pure function of its sources: tests pass maps and never touch the process
//! environment.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tollgate_console::ConsoleSettings;
use tollgate_core::catalog::{Alias, Catalog, Deployment, Model};
use tollgate_core::money::NanoUsd;
use tollgate_core::pricing::{ModelPrices, Multiplier, PriceSchedule, PromptTier, TokenPrice};
use tollgate_core::tiers::{BillingPolicy, LimitSet, RateLimits, Tier, TierLadder};
use tollgate_gateway::GatewaySettings;
use tollgate_limiter::{RedisClock, RedisTimeouts};
use tollgate_service::payments::stripe::StripeSettings;
use tollgate_service::{PaymentProvider, Settings};
use tollgate_store::PostgresOptions;
use tollgate_upstream::Provider;
use tollgate_upstream::anthropic::{AnthropicClient, AnthropicConfig};
use tollgate_upstream::bedrock::{AwsCredentials, BedrockClient, BedrockConfig};
use tollgate_upstream::gemini::{GEMINI_BASE_URL_DEFAULT, GeminiClient, GeminiConfig};
use tollgate_upstream::openai::{MaxTokensField, OpenAiClient, OpenAiConfig};
use tollgate_upstream::simulated::{Simulated, SimulatedConfig};
use tollgate_upstream::vertex::{ServiceAccountKey, VertexClient, VertexConfig};

mod sso;
pub use sso::{SsoConfig, SsoGroupConfig};

use crate::serve::ServerSettings;
use crate::telemetry::MetricsEndpoint;

pub const DEFAULTS: &str = include_str!("../config/defaults.toml");
const ENV_PREFIX: &str = "TOLLGATE_";
/// Names the config file (`--config`), read by the command line, not a configuration key.
const CONFIG_FILE_VARIABLE: &str = "TOLLGATE_CONFIG";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub limits: LimitsConfig,
    pub console: ConsoleConfig,
    pub credits: CreditsConfig,
    pub gateway: GatewayConfig,
    pub observability: ObservabilityConfig,
    pub batches: BatchesConfig,
    pub files: FilesConfig,
    pub alerts: AlertsConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Whether the built-in catalogue (its models and aliases, all on the simulated model)
    /// is served beside the configured models. `false` in a config file or
    /// `TOLLGATE_DEFAULT_MODELS=false` serves the configured models only.
    #[serde(default = "default_true")]
    pub default_models: bool,
    pub models: BTreeMap<String, ModelConfig>,
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    pub payments: PaymentsConfig,
    pub tiers: Vec<TierConfig>,
    #[serde(default)]
    pub limit_sets: BTreeMap<String, LimitSetConfig>,
    #[serde(default)]
    pub programmes: BTreeMap<String, ProgrammeConfig>,
    /// The process's variables the cloud providers read for credentials
    /// (`CLOUD_VARIABLES`), kept from `parse`'s environment.
    #[serde(skip)]
    pub cloud_environment: CloudEnvironment,
}

/// The variables the cloud providers fall back on for credentials, as AWS's and Google's
/// own tools read them.
const CLOUD_VARIABLES: &[&str] = &[
    "GEMINI_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_PROFILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "HOME",
];

/// `CLOUD_VARIABLES` as the environment gave them; never printed.
#[derive(Clone, Default)]
pub struct CloudEnvironment(BTreeMap<String, String>);

impl CloudEnvironment {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }
}

impl std::fmt::Debug for CloudEnvironment {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_set().entries(self.0.keys()).finish()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    /// `test` or `stripe`.
    pub provider: String,
    #[serde(default)]
    pub stripe: StripeConfig,
}

/// The `stripe` provider's settings (`[payments.stripe]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    pub secret_key: Option<String>,
    pub secret_key_file: Option<PathBuf>,
    /// The endpoint's signing secret (`whsec_…`).
    pub webhook_secret: Option<String>,
    /// The secret being rotated out: signatures under either are accepted.
    pub previous_webhook_secret: Option<String>,
    #[serde(default = "default_webhook_tolerance")]
    pub webhook_tolerance_seconds: u64,
    #[serde(default = "default_currency")]
    pub currency: String,
    #[serde(default = "default_stripe_api")]
    pub api_base: String,
    pub publishable_key: Option<String>,
    /// Where Checkout sends the buyer back (this server's public address).
    pub public_url: Option<String>,
    /// The origin of Stripe's Checkout pages (a custom domain if the account has one): the
    /// Console's forms may lead there, and nowhere else but the Console.
    #[serde(default = "default_stripe_checkout")]
    pub checkout_origin: String,
}

impl Default for StripeConfig {
    fn default() -> StripeConfig {
        StripeConfig {
            secret_key: None,
            secret_key_file: None,
            webhook_secret: None,
            previous_webhook_secret: None,
            webhook_tolerance_seconds: default_webhook_tolerance(),
            currency: default_currency(),
            api_base: default_stripe_api(),
            publishable_key: None,
            public_url: None,
            checkout_origin: default_stripe_checkout(),
        }
    }
}

/// Secrets stay out of debug output.
impl std::fmt::Debug for StripeConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StripeConfig")
            .field("currency", &self.currency)
            .field("api_base", &self.api_base)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

fn default_webhook_tolerance() -> u64 {
    300
}

fn default_currency() -> String {
    "usd".to_owned()
}

fn default_stripe_api() -> String {
    "https://api.stripe.com".to_owned()
}

/// `payments.stripe.checkout_origin` as an origin (scheme and host, nothing after), the form
/// a content security policy names it in.
fn checkout_origin(configured: &str) -> anyhow::Result<String> {
    let uri: axum::http::Uri = configured.parse().unwrap_or_default();
    match (uri.scheme_str(), uri.authority(), uri.path(), uri.query()) {
        (Some(scheme @ ("https" | "http")), Some(authority), "" | "/", None) => {
            Ok(format!("{scheme}://{authority}"))
        }
        _ => bail!(
            "payments.stripe.checkout_origin must be an origin such as https://checkout.stripe.com, not '{configured}'"
        ),
    }
}

fn default_stripe_checkout() -> String {
    "https://checkout.stripe.com".to_owned()
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    pub requests_per_minute: u64,
    pub input_tokens_per_minute: u64,
    pub output_tokens_per_minute: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub name: String,
    pub cumulative_purchases_usd: String,
    pub monthly_spend_limit_usd: Option<String>,
    pub max_single_purchase_usd: Option<String>,
    pub count_tokens_requests_per_minute: u64,
    pub rate_limits: BTreeMap<String, RateLimitsConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSetConfig {
    pub monthly_spend_limit_usd: Option<String>,
    pub max_single_purchase_usd: Option<String>,
    #[serde(default)]
    pub count_tokens_requests_per_minute: u64,
    #[serde(default)]
    pub rate_limits: BTreeMap<String, RateLimitsConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgrammeConfig {
    pub limit_set: String,
}

/// Where durable state lives: SQLite in `data_dir` (the default), or a PostgreSQL server
/// shared by several replicas.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…`; empty = SQLite in `data_dir`.
    pub url: String,
    /// PostgreSQL connections per process.
    pub max_connections: u32,
    /// PostgreSQL schema for tollgate's tables (created if missing); empty = the server's
    /// default search path.
    pub schema: String,
    /// SQLite: how long a committed charge may wait for its fsync (0: none waits).
    pub sync_interval_millis: u64,
}

/// What one connection may hold, and how many are served at once (see `serve.rs`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub header_read_timeout_seconds: u64,
    pub idle_timeout_seconds: u64,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    /// The runtime's worker threads; 0: `Config::worker_threads` decides.
    pub worker_threads: usize,
}

/// Where rate-limit buckets live: this process, or a Redis server shared by replicas.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `redis://…`; empty = in this process.
    pub redis_url: String,
    /// Prefix of every Redis key, so several deployments can share one server.
    pub redis_key_prefix: String,
    /// `server` (Redis's clock, one clock for every replica) or `caller` (this process's
    /// clock; for tests that control time).
    pub redis_clock: String,
    /// Start with a shared PostgreSQL database but buckets in this process. Each replica
    /// would then enforce the whole limit by itself, so N replicas admit up to N times the
    /// limit: only right when this is the only replica.
    pub allow_local_limits: bool,
    /// How long one call to Redis (connecting included) may take before it fails.
    pub redis_timeout_millis: u64,
    /// After Redis failed to answer, requests are refused at once for this long; then one
    /// request tries it again.
    pub redis_retry_millis: u64,
}

/// The web console at `/console`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Mark the session cookie `Secure`: `auto` (when the request came over TLS, as
    /// `X-Forwarded-Proto: https` says, or to a loopback host), `always` (behind a TLS proxy
    /// that does not say so) or `never`.
    pub secure_cookies: String,
    /// Addresses or networks (`10.0.0.0/8`) of the proxies in front, comma-separated, whose
    /// `client_address_header` names the client for the sign-in limit per client. Empty:
    /// the connection's peer is the client and the header is ignored.
    pub trusted_proxies: String,
    /// The header those proxies put the client's address in.
    pub client_address_header: String,
    /// Single sign-on (`[console.sso]`).
    pub sso: sso::SsoConfig,
}

/// How the durable state is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite(PathBuf),
    Postgres(PostgresOptions),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditsConfig {
    pub starter_grant_usd: String,
    pub starter_grant_days: u32,
}

/// Metrics and logs (`[observability]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservabilityConfig {
    /// `GET /metrics` on its own listener (an address), open to whoever reaches it.
    pub metrics_listen: String,
    /// `GET /metrics` on the main listener, to a scrape bearing this token.
    pub metrics_token: String,
    /// Organizations with their own label in cost metrics; later ones are `other`.
    pub metrics_max_organizations: usize,
    /// `text` (human-readable lines) or `json` (one object a line).
    pub log_format: String,
    /// Where spans go, over OTLP (HTTP/protobuf): a collector's base URL
    /// (`http://collector:4318`); empty: no traces.
    pub otlp_endpoint: String,
    /// The share of traces kept where the client did not decide (a decimal, 0 to 1).
    pub trace_sample_ratio: String,
}

/// Where spans are exported, and how many.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSettings {
    /// The collector's endpoint for spans (`…/v1/traces`).
    pub endpoint: String,
    pub sample_ratio: f64,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Whether this process's delivery loop sends alerts (every replica's may).
    pub deliver: bool,
    pub attempts_max: u32,
    pub retry_first_delay_seconds: u64,
    pub retry_max_delay_seconds: u64,
    pub lease_seconds: u64,
    pub poll_interval_millis: u64,
    pub webhook_timeout_seconds: u64,
    pub key_expiry_notice_days: u32,
    /// Empty: no email.
    pub smtp_host: String,
    pub smtp_port: u16,
    /// `none` or `starttls`.
    pub smtp_security: String,
    pub smtp_username: String,
    pub smtp_password: String,
    #[serde(default)]
    pub smtp_password_file: Option<PathBuf>,
    /// PEM certificates of authorities a STARTTLS relay may chain to besides the public ones.
    #[serde(default)]
    pub smtp_ca_file: Option<PathBuf>,
    pub smtp_from: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchesConfig {
    /// Requests of Message Batches run at once by this process.
    pub concurrency: usize,
    /// How long a runner's claim on a request lasts unless renewed.
    pub lease_seconds: u64,
    /// How often a provider batch is asked whether it ended, in milliseconds.
    pub upstream_poll_millis: u64,
}

/// The Files API's storage (`[files]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Where files' bytes are kept; empty: `files` in the data directory.
    pub directory: PathBuf,
    pub max_file_bytes: u64,
    pub organization_quota_bytes: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub max_body_bytes: usize,
    /// Upstream calls one organization may have in flight in this process.
    pub max_concurrent_requests_per_organization: usize,
    pub disconnect_drain_seconds: u64,
    pub reservation_ttl_seconds: u64,
    pub key_cache_ttl_millis: u64,
    pub maintenance_interval_seconds: u64,
    pub auto_reload_stale_seconds: u64,
}

#[derive(Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    Simulated {
        #[serde(default)]
        tokens_per_second: u32,
        #[serde(default = "default_cooldown")]
        cooldown_seconds: u64,
    },
    Anthropic {
        base_url: String,
        api_key: Option<String>,
        api_key_file: Option<PathBuf>,
        /// PEM certificates trusted beside the built-in roots: an upstream whose certificate
        /// a private authority signed.
        ca_file: Option<PathBuf>,
        #[serde(default = "default_connect_timeout")]
        connect_timeout_seconds: u64,
        #[serde(default = "default_idle_timeout")]
        idle_timeout_seconds: u64,
        #[serde(default = "default_request_timeout")]
        request_timeout_seconds: u64,
        #[serde(default = "default_cooldown")]
        cooldown_seconds: u64,
        /// Where Message Batches whose requests route here first run.
        #[serde(default)]
        batches: ProviderBatches,
    },
    /// Any OpenAI-compatible Chat Completions server; `base_url` includes `/v1`.
    #[serde(rename = "openai")]
    OpenAi {
        base_url: String,
        api_key: Option<String>,
        api_key_file: Option<PathBuf>,
        /// PEM certificates trusted beside the built-in roots: an upstream whose certificate
        /// a private authority signed.
        ca_file: Option<PathBuf>,
        #[serde(default = "default_connect_timeout")]
        connect_timeout_seconds: u64,
        #[serde(default = "default_idle_timeout")]
        idle_timeout_seconds: u64,
        #[serde(default = "default_request_timeout")]
        request_timeout_seconds: u64,
        #[serde(default = "default_cooldown")]
        cooldown_seconds: u64,
        /// `max_tokens` (most compatible servers) or `max_completion_tokens` (OpenAI's
        /// reasoning models).
        #[serde(default = "default_max_tokens_field")]
        max_tokens_field: String,
    },
    /// Anthropic's models on Amazon Bedrock, signed with SigV4. Credentials: the keys here,
    /// else `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, else a
    /// profile of the shared credentials file.
    Bedrock {
        region: String,
        /// Scheme and host of the runtime endpoint (default
        /// `https://bedrock-runtime.{region}.amazonaws.com`).
        endpoint: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        secret_access_key_file: Option<PathBuf>,
        session_token: Option<String>,
        /// Default `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
        credentials_file: Option<PathBuf>,
        /// Default `AWS_PROFILE`, else `default`.
        profile: Option<String>,
        /// PEM certificates trusted beside the built-in roots.
        ca_file: Option<PathBuf>,
        #[serde(default = "default_connect_timeout")]
        connect_timeout_seconds: u64,
        #[serde(default = "default_idle_timeout")]
        idle_timeout_seconds: u64,
        #[serde(default = "default_request_timeout")]
        request_timeout_seconds: u64,
        #[serde(default = "default_cooldown")]
        cooldown_seconds: u64,
    },
    /// Anthropic's models on Google Cloud's Vertex AI, with access tokens from a service
    /// account's JSON key.
    Vertex {
        project: String,
        region: String,
        /// Scheme and host of the API (default `https://{region}-aiplatform.googleapis.com`).
        endpoint: Option<String>,
        /// The service account's JSON key; default `GOOGLE_APPLICATION_CREDENTIALS`.
        credentials_file: Option<PathBuf>,
        /// PEM certificates trusted beside the built-in roots.
        ca_file: Option<PathBuf>,
        #[serde(default = "default_connect_timeout")]
        connect_timeout_seconds: u64,
        #[serde(default = "default_idle_timeout")]
        idle_timeout_seconds: u64,
        #[serde(default = "default_request_timeout")]
        request_timeout_seconds: u64,
        #[serde(default = "default_cooldown")]
        cooldown_seconds: u64,
    },
    /// Google's Gemini API (`generateContent`), translated from and to Messages. The key:
    /// `api_key` or `api_key_file`, else `GEMINI_API_KEY`.
    Gemini {
        #[serde(default = "default_gemini_base_url")]
        base_url: String,
        api_key: Option<String>,
        api_key_file: Option<PathBuf>,
        /// PEM certificates trusted beside the built-in roots.
        ca_file: Option<PathBuf>,
        #[serde(default = "default_connect_timeout")]
        connect_timeout_seconds: u64,
        #[serde(default = "default_idle_timeout")]
        idle_timeout_seconds: u64,
        #[serde(default = "default_request_timeout")]
        request_timeout_seconds: u64,
        #[serde(default = "default_cooldown")]
        cooldown_seconds: u64,
    },
}

/// Where the Message Batches requests of an `anthropic` provider run.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderBatches {
    /// On the provider's own Batches API, as one provider batch per batch.
    #[default]
    Upstream,
    /// Here, request by request through `/v1/messages`, as for every other kind.
    Local,
}

impl ProviderConfig {
    /// Whether the provider's kind serves `POST /v1/embeddings`
    /// (`tollgate_upstream::Provider::embeds`).
    fn embeds(&self) -> bool {
        matches!(
            self,
            ProviderConfig::Simulated { .. } | ProviderConfig::OpenAi { .. } | ProviderConfig::Gemini { .. }
        )
    }

    /// How long a deployment on this provider is passed over after a failure.
    fn cooldown(&self) -> chrono::Duration {
        let seconds = match self {
            ProviderConfig::Simulated { cooldown_seconds, .. }
            | ProviderConfig::Anthropic { cooldown_seconds, .. }
            | ProviderConfig::OpenAi { cooldown_seconds, .. }
            | ProviderConfig::Bedrock { cooldown_seconds, .. }
            | ProviderConfig::Vertex { cooldown_seconds, .. }
            | ProviderConfig::Gemini { cooldown_seconds, .. } => *cooldown_seconds,
        };
        chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 1_000))
    }
}

// Secrets stay out of logs and error messages.
impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderConfig::Simulated {
                tokens_per_second, ..
            } => formatter
                .debug_struct("Simulated")
                .field("tokens_per_second", tokens_per_second)
                .finish_non_exhaustive(),
            ProviderConfig::Anthropic { base_url, .. } => formatter
                .debug_struct("Anthropic")
                .field("base_url", base_url)
                .finish_non_exhaustive(),
            ProviderConfig::OpenAi { base_url, .. } => formatter
                .debug_struct("OpenAi")
                .field("base_url", base_url)
                .finish_non_exhaustive(),
            ProviderConfig::Bedrock { region, endpoint, .. } => formatter
                .debug_struct("Bedrock")
                .field("region", region)
                .field("endpoint", endpoint)
                .finish_non_exhaustive(),
            ProviderConfig::Vertex {
                project,
                region,
                endpoint,
                ..
            } => formatter
                .debug_struct("Vertex")
                .field("project", project)
                .field("region", region)
                .field("endpoint", endpoint)
                .finish_non_exhaustive(),
            ProviderConfig::Gemini { base_url, .. } => formatter
                .debug_struct("Gemini")
                .field("base_url", base_url)
                .finish_non_exhaustive(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    300
}
fn default_request_timeout() -> u64 {
    600
}
fn default_cooldown() -> u64 {
    30
}
fn default_gemini_base_url() -> String {
    GEMINI_BASE_URL_DEFAULT.to_owned()
}
fn default_max_tokens_field() -> String {
    "max_tokens".to_owned()
}
fn default_weight() -> u32 {
    1
}
fn default_max_tokens() -> u64 {
    4_096
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Rate-limit class: every tier must carry limits for it.
    pub class: String,
    pub display_name: Option<String>,
    pub created_at: Option<String>,
    /// Shorthand for one deployment; give this or `deployments`.
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    /// Where the model is served, tried by priority with failover.
    #[serde(default)]
    pub deployments: Vec<DeploymentConfig>,
    /// The output limit of a request that sets none (Chat Completions allows that).
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u64,
    /// The largest `max_tokens` the model accepts, where known.
    pub max_output_tokens: Option<u64>,
    /// The model's context window in tokens, where known.
    pub max_input_tokens: Option<u64>,
    /// An embeddings model (`POST /v1/embeddings` only): `output` may be left out, and
    /// every deployment must be on a provider that serves embeddings.
    #[serde(default)]
    pub embeddings: bool,
    /// The prices in force until the first change, and from the beginning.
    #[serde(flatten)]
    pub prices: PricesConfig,
    /// Dated changes of the prices, oldest first.
    #[serde(default)]
    pub price_changes: Vec<PriceChangeConfig>,
}

/// Prices in USD per million tokens; `per_request` and `per_image` in USD each.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricesConfig {
    pub input: Option<String>,
    pub output: Option<String>,
    /// Overrides of the contract's cache rules (1.25×, 2× and 0.1× input).
    pub cache_write_5m: Option<String>,
    pub cache_write_1h: Option<String>,
    pub cache_read: Option<String>,
    pub per_request: Option<String>,
    pub per_image: Option<String>,
    /// What fast mode multiplies the token cost by ("6"); unset: no fast mode.
    pub fast_multiplier: Option<String>,
    /// Whether the model takes `inference_geo` (data residency, billed 1.1×); a
    /// deployment whose provider has no such parameter sets `false`.
    pub data_residency: Option<bool>,
    /// USD per thousand web searches ("10").
    pub web_search_per_thousand: Option<String>,
    /// Prompt-length tiers; a list given replaces the inherited one (`[]` removes it).
    pub long_context: Option<Vec<LongContextConfig>>,
}

/// A prompt-length tier: the rates of a request whose prompt (input, cache reads and cache
/// writes) is longer than `above_input_tokens`; a kind it does not set keeps the base rate.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContextConfig {
    pub above_input_tokens: u64,
    pub input: Option<String>,
    pub output: Option<String>,
    pub cache_write_5m: Option<String>,
    pub cache_write_1h: Option<String>,
    pub cache_read: Option<String>,
}

/// A dated change: from `from` (a UTC date, or an RFC 3339 instant on the hour) the prices
/// are the previous ones with each key given here replaced, as a deployment's keys replace
/// its model's.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceChangeConfig {
    pub from: String,
    #[serde(flatten)]
    pub prices: PricesConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    pub provider: String,
    /// The id the provider knows; the model's own id when absent.
    pub upstream_model: Option<String>,
    /// Lower first; failover moves to the next.
    #[serde(default)]
    pub priority: u32,
    /// Share of traffic among equal priorities.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Overrides of the model's prices for requests this deployment answers.
    #[serde(flatten)]
    pub prices: PricesConfig,
}

/// Flags given on the command line; they override everything else.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// `--database-url` (or `DATABASE_URL`).
    pub database_url: Option<String>,
    /// `--redis-url`.
    pub redis_url: Option<String>,
    /// `--allow-local-limits`.
    pub allow_local_limits: bool,
}

impl Config {
    /// Merges the layers and checks the result. `file` is the text of `--config`;
    /// `environment` holds the process's variables (only `TOLLGATE_*` ones are read).
    pub fn parse(
        file: Option<&str>,
        environment: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> anyhow::Result<Config> {
        let mut merged: toml::Table = DEFAULTS.parse().context("the built-in defaults do not parse")?;
        let layer: Option<toml::Table> = file
            .map(|file| file.parse().context("the config file is not valid TOML"))
            .transpose()?;
        // The built-in catalogue is a default, not a floor: a config that says which models
        // exist gets those alone, and no default model is left to the simulated one.
        let default_models = match environment.get("TOLLGATE_DEFAULT_MODELS") {
            Some(value) => value.trim() != "false",
            None => layer
                .as_ref()
                .and_then(|layer| layer.get("default_models"))
                .and_then(toml::Value::as_bool)
                .unwrap_or(true),
        };
        if !default_models {
            merged.insert("models".to_owned(), toml::Value::Table(toml::Table::new()));
            merged.remove("aliases");
        }
        if let Some(layer) = layer {
            merge(&mut merged, layer);
        }
        let mut variables: Vec<(&String, &String)> = environment
            .iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && *name != CONFIG_FILE_VARIABLE)
            .collect();
        variables.sort();
        for (name, value) in variables {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            set_path(&mut merged, &path, env_value(value)).with_context(|| format!("cannot apply {name}"))?;
        }
        let mut config: Config = toml::Value::Table(merged)
            .try_into()
            .context("the configuration is invalid")?;
        config.cloud_environment = CloudEnvironment(
            CLOUD_VARIABLES
                .iter()
                .filter_map(|name| Some(((*name).to_owned(), environment.get(*name)?.clone())))
                .collect(),
        );
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(data_dir) = &overrides.data_dir {
            config.data_dir = data_dir.clone();
        }
        if let Some(url) = &overrides.database_url {
            config.database.url = url.clone();
        }
        if let Some(url) = &overrides.redis_url {
            config.limits.redis_url = url.clone();
        }
        config.limits.allow_local_limits |= overrides.allow_local_limits;
        config.backend()?;
        config.redis_clock()?;
        config.redis_timeouts()?;
        config.server_settings()?;
        config.console_settings()?;
        config.console.sso.settings()?;
        config.catalog()?;
        config.starter_grant()?;
        config.billing_policy()?;
        config.payment_provider()?;
        Ok(config)
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("tollgate.sqlite")
    }

    /// SQLite in `data_dir` unless `database.url` names a PostgreSQL server.
    pub fn backend(&self) -> anyhow::Result<Backend> {
        let url = self.database.url.trim();
        if url.is_empty() {
            return Ok(Backend::Sqlite(self.database_path()));
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!(
                "database.url must be a postgres:// URL (or empty for SQLite in data_dir), not '{}'",
                redact_password(url)
            );
        }
        if self.database.max_connections == 0 {
            bail!("database.max_connections must be at least 1");
        }
        let schema = self.database.schema.trim();
        if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("database.schema may hold only letters, digits and '_', not '{schema}'");
        }
        Ok(Backend::Postgres(PostgresOptions {
            url: url.to_owned(),
            max_connections: self.database.max_connections,
            schema: (!schema.is_empty()).then(|| schema.to_owned()),
            asynchronous_commit: self.database.sync_interval_millis > 0,
        }))
    }

    /// Where the database is, for messages (a PostgreSQL password is never shown).
    pub fn database_description(&self) -> String {
        match self.backend() {
            Ok(Backend::Postgres(options)) => format!("PostgreSQL at {}", redact_password(&options.url)),
            _ => format!("SQLite at {}", self.database_path().display()),
        }
    }

    /// How this process delivers alerts (`[alerts]`).
    pub fn alerting_settings(&self) -> anyhow::Result<tollgate_service::AlertingSettings> {
        let alerts = &self.alerts;
        if alerts.attempts_max == 0 {
            bail!("alerts.attempts_max must be at least 1");
        }
        let smtp = if alerts.smtp_host.trim().is_empty() {
            None
        } else {
            let security = match alerts.smtp_security.as_str() {
                "none" => tollgate_service::SmtpSecurity::None,
                "starttls" => tollgate_service::SmtpSecurity::StartTls,
                other => bail!("alerts.smtp_security must be 'none' or 'starttls', not '{other}'"),
            };
            let password = match &alerts.smtp_password_file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("alerts.smtp_password_file: cannot read {}", path.display()))?
                    .trim_end()
                    .to_owned(),
                None => alerts.smtp_password.clone(),
            };
            let extra_roots = match &alerts.smtp_ca_file {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .with_context(|| format!("alerts.smtp_ca_file: cannot read {}", path.display()))?;
                    Some(tollgate_service::SmtpRoots::from_pem(&pem).map_err(|error| {
                        anyhow::anyhow!("alerts.smtp_ca_file: {}: {error}", path.display())
                    })?)
                }
                None => None,
            };
            Some(tollgate_service::SmtpSettings {
                host: alerts.smtp_host.trim().to_owned(),
                port: alerts.smtp_port,
                security,
                credentials: (!alerts.smtp_username.is_empty())
                    .then(|| (alerts.smtp_username.clone(), password)),
                extra_roots,
                from: alerts.smtp_from.clone(),
            })
        };
        Ok(tollgate_service::AlertingSettings {
            retry: tollgate_core::alerts::RetryPolicy {
                attempts_max: alerts.attempts_max,
                first_delay_seconds: alerts.retry_first_delay_seconds.max(1),
                max_delay_seconds: alerts.retry_max_delay_seconds.max(1),
            },
            lease: Duration::from_secs(alerts.lease_seconds.max(1)),
            poll_interval: Duration::from_millis(alerts.poll_interval_millis.max(10)),
            webhook_timeout: Duration::from_secs(alerts.webhook_timeout_seconds.max(1)),
            smtp,
            key_expiry_days: alerts.key_expiry_notice_days,
        })
    }

    pub fn console_settings(&self) -> anyhow::Result<ConsoleSettings> {
        let secure_cookies = match self.console.secure_cookies.as_str() {
            "auto" => None,
            "always" => Some(true),
            "never" => Some(false),
            other => bail!("console.secure_cookies must be 'auto', 'always' or 'never', not '{other}'"),
        };
        let trusted_proxies = tollgate_console::TrustedProxies::parse(
            &self.console.trusted_proxies,
            &self.console.client_address_header,
        )
        .map_err(|problem| {
            anyhow::anyhow!("console.trusted_proxies or console.client_address_header: {problem}")
        })?;
        let payment_page_origin = (self.payments.provider == "stripe")
            .then(|| checkout_origin(&self.payments.stripe.checkout_origin))
            .transpose()?;
        Ok(ConsoleSettings {
            secure_cookies,
            trusted_proxies,
            payment_page_origin,
        })
    }

    pub fn redis_clock(&self) -> anyhow::Result<RedisClock> {
        match self.limits.redis_clock.as_str() {
            "server" => Ok(RedisClock::Server),
            "caller" => Ok(RedisClock::Caller),
            other => bail!("limits.redis_clock must be 'server' or 'caller', not '{other}'"),
        }
    }

    /// Refuses a reservation TTL the heartbeat cannot keep ahead of. A running request's
    /// reservation has its deadline moved to now + TTL at every maintenance pass, so the TTL
    /// must exceed two maintenance intervals (one pass may run late); then no request, however
    /// long it runs, has its reservation voided under it (#24).
    pub fn check_reservation_ttl(&self) -> anyhow::Result<()> {
        let ttl = self.gateway.reservation_ttl_seconds;
        let interval = self.gateway.maintenance_interval_seconds.max(1);
        if ttl <= interval.saturating_mul(2) {
            bail!(
                "refusing to start: gateway.reservation_ttl_seconds ({ttl}) must be more than twice                  gateway.maintenance_interval_seconds ({interval}). Each maintenance pass extends the                  reservations of running requests by the TTL; with a shorter TTL the reaper could void                  a reservation while its request still runs, and the request would go uncharged."
            );
        }
        Ok(())
    }

    /// Refuses a shared database with per-process rate limits (see `LimitsConfig`).
    pub fn check_replica_safety(&self) -> anyhow::Result<()> {
        let shared = matches!(self.backend()?, Backend::Postgres(_));
        if shared && self.limits.redis_url.trim().is_empty() && !self.limits.allow_local_limits {
            bail!(
                "refusing to start: the database is shared (PostgreSQL) but rate limits would be kept \
                 in this process, so every replica would enforce the whole limit by itself and N \
                 replicas would admit N times it. Give --redis-url (limits.redis_url) so replicas \
                 share their buckets, or --allow-local-limits (limits.allow_local_limits = true) if \
                 this is the only replica."
            );
        }
        Ok(())
    }

    pub fn starter_grant(&self) -> anyhow::Result<NanoUsd> {
        let amount =
            NanoUsd::parse_usd(&self.credits.starter_grant_usd).context("credits.starter_grant_usd")?;
        if amount.is_negative() {
            bail!("credits.starter_grant_usd must not be negative");
        }
        Ok(amount)
    }

    pub fn service_settings(&self) -> anyhow::Result<Settings> {
        let seconds = |value: u64| chrono::Duration::seconds(i64::try_from(value).unwrap_or(i64::MAX / 1000));
        Ok(Settings {
            policy: self.billing_policy()?,
            auto_reload_stale: seconds(self.gateway.auto_reload_stale_seconds),
            starter_grant: self.starter_grant()?,
            starter_grant_lifetime: (self.credits.starter_grant_days > 0)
                .then(|| chrono::Duration::days(i64::from(self.credits.starter_grant_days))),
            reservation_ttl: seconds(self.gateway.reservation_ttl_seconds),
            key_cache_ttl: chrono::Duration::milliseconds(
                i64::try_from(self.gateway.key_cache_ttl_millis).unwrap_or(1000),
            ),
        })
    }

    /// The configured payment provider.
    pub fn payment_provider(&self) -> anyhow::Result<PaymentProvider> {
        match self.payments.provider.as_str() {
            "test" => Ok(PaymentProvider::test()),
            "stripe" => Ok(PaymentProvider::stripe(self.stripe_settings()?)),
            other => bail!("payments.provider '{other}' is not known (built in: test, stripe)"),
        }
    }

    fn stripe_settings(&self) -> anyhow::Result<StripeSettings> {
        let stripe = &self.payments.stripe;
        let secret_key = match (&stripe.secret_key, &stripe.secret_key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("payments.stripe.secret_key_file: cannot read {}", path.display()))?
                .trim()
                .to_owned(),
            (None, None) => bail!("payments.stripe.secret_key (or secret_key_file) is required"),
        };
        let Some(webhook_secret) = stripe.webhook_secret.clone().filter(|secret| !secret.is_empty()) else {
            bail!("payments.stripe.webhook_secret is required: credit is granted on Stripe's signed events");
        };
        let currency = stripe.currency.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_lowercase()) {
            bail!(
                "payments.stripe.currency must be a three-letter code, not '{}'",
                stripe.currency
            );
        }
        if stripe.webhook_tolerance_seconds == 0 {
            bail!("payments.stripe.webhook_tolerance_seconds must be at least 1");
        }
        Ok(StripeSettings {
            secret_key,
            webhook_secrets: std::iter::once(webhook_secret)
                .chain(
                    stripe
                        .previous_webhook_secret
                        .clone()
                        .filter(|secret| !secret.is_empty()),
                )
                .collect(),
            currency,
            api_base: stripe.api_base.trim_end_matches('/').to_owned(),
            publishable_key: stripe.publishable_key.clone(),
            webhook_tolerance: chrono::Duration::seconds(
                i64::try_from(stripe.webhook_tolerance_seconds).unwrap_or(i64::MAX / 1000),
            ),
            public_url: stripe
                .public_url
                .as_deref()
                .map(|url| url.trim_end_matches('/').to_owned())
                .filter(|url| !url.is_empty()),
        })
    }

    pub fn server_settings(&self) -> anyhow::Result<ServerSettings> {
        let server = &self.server;
        if server.header_read_timeout_seconds == 0 || server.idle_timeout_seconds == 0 {
            bail!("server.header_read_timeout_seconds and server.idle_timeout_seconds must be at least 1");
        }
        if server.max_connections == 0 {
            bail!("server.max_connections must be at least 1");
        }
        if server.max_header_bytes < 1024 {
            bail!("server.max_header_bytes must be at least 1024");
        }
        Ok(ServerSettings {
            header_read_timeout: Duration::from_secs(server.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(server.idle_timeout_seconds),
            max_connections: server.max_connections,
            max_header_bytes: server.max_header_bytes,
        })
    }

    /// The runtime's worker threads on a machine with `cores` of them: `server.worker_threads`,
    /// or else one a core less the core SQLite's writer thread keeps busy under load (at
    /// least one), since a worker that shares its core with the writer only adds wake-ups
    /// and context switches (BENCHMARKS.md); PostgreSQL's writer is a task on the workers,
    /// which then get every core.
    pub fn worker_threads(&self, cores: usize) -> usize {
        if self.server.worker_threads > 0 {
            return self.server.worker_threads;
        }
        match self.backend() {
            Ok(Backend::Postgres(_)) => cores.max(1),
            _ => cores.saturating_sub(1).max(1),
        }
    }

    /// How long a call to Redis may take, and how long a failing Redis is left alone.
    pub fn redis_timeouts(&self) -> anyhow::Result<RedisTimeouts> {
        if self.limits.redis_timeout_millis == 0 {
            bail!("limits.redis_timeout_millis must be at least 1");
        }
        Ok(RedisTimeouts {
            timeout: Duration::from_millis(self.limits.redis_timeout_millis),
            retry_after: Duration::from_millis(self.limits.redis_retry_millis),
        })
    }

    /// Where `/metrics` is served: its own listener, the main one behind a token, or not.
    pub fn metrics_endpoint(&self) -> anyhow::Result<MetricsEndpoint> {
        let observability = &self.observability;
        let listen = observability.metrics_listen.trim();
        let token = observability.metrics_token.trim();
        match (listen.is_empty(), token.is_empty()) {
            (true, true) => Ok(MetricsEndpoint::Off),
            (true, false) => Ok(MetricsEndpoint::Token(token.to_owned())),
            (false, true) => Ok(MetricsEndpoint::Listen(listen.parse().with_context(|| {
                format!(
                    "observability.metrics_listen must be an address such as 127.0.0.1:9464, not '{listen}'"
                )
            })?)),
            (false, false) => bail!(
                "set one of observability.metrics_listen (a listener of its own) and observability.metrics_token (on the main listener), not both"
            ),
        }
    }

    /// Trace export, when `observability.otlp_endpoint` is set.
    pub fn trace_settings(&self) -> anyhow::Result<Option<TraceSettings>> {
        let endpoint = self.observability.otlp_endpoint.trim().trim_end_matches('/');
        if endpoint.is_empty() {
            return Ok(None);
        }
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            bail!("observability.otlp_endpoint must be an http:// or https:// URL, not '{endpoint}'");
        }
        let text = self.observability.trace_sample_ratio.trim();
        let sample_ratio: f64 = text
            .parse()
            .ok()
            .filter(|ratio: &f64| (0.0..=1.0).contains(ratio))
            .with_context(|| {
                format!("observability.trace_sample_ratio must be a number from 0 to 1, not '{text}'")
            })?;
        Ok(Some(TraceSettings {
            endpoint: format!("{endpoint}/v1/traces"),
            sample_ratio,
        }))
    }

    pub fn log_format(&self) -> anyhow::Result<LogFormat> {
        match self.observability.log_format.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => bail!("observability.log_format must be 'text' or 'json', not '{other}'"),
        }
    }

    /// Where the Files API keeps bytes, and its limits.
    pub fn file_settings(&self) -> tollgate_service::FileSettings {
        let directory = if self.files.directory.as_os_str().is_empty() {
            self.data_dir.join("files")
        } else {
            self.files.directory.clone()
        };
        tollgate_service::FileSettings {
            directory,
            max_file_bytes: self.files.max_file_bytes,
            organization_quota_bytes: self.files.organization_quota_bytes,
        }
    }

    pub fn gateway_settings(&self) -> GatewaySettings {
        GatewaySettings {
            max_body_bytes: self.gateway.max_body_bytes,
            disconnect_drain: Duration::from_secs(self.gateway.disconnect_drain_seconds),
            batch_providers: self
                .providers
                .iter()
                .filter(|(_, provider)| {
                    matches!(
                        provider,
                        ProviderConfig::Anthropic {
                            batches: ProviderBatches::Upstream,
                            ..
                        }
                    )
                })
                .map(|(name, _)| name.clone())
                .collect(),
        }
    }

    /// The model catalogue, newest model first (as Anthropic lists them).
    pub fn catalog(&self) -> anyhow::Result<Catalog> {
        let mut models = Vec::new();
        for (id, model) in &self.models {
            let context = format!("models.{id}");
            let prices = price_schedule(model, &PricesConfig::default(), &context)?;
            let shorthand = model.provider.as_ref().map(|provider| {
                // The shorthand keeps the catalogue's first rule: a `prefix*` alias sends
                // the client's id upstream, whatever `upstream_model` says.
                (
                    DeploymentConfig {
                        provider: provider.clone(),
                        upstream_model: model.upstream_model.clone(),
                        priority: 0,
                        weight: 1,
                        prices: PricesConfig::default(),
                    },
                    true,
                )
            });
            let configured = match (shorthand, model.deployments.is_empty()) {
                (Some(_), false) => bail!("{context}: give `provider` or `deployments`, not both"),
                (None, true) => bail!("{context}: give a `provider` or at least one `deployments` entry"),
                (Some(shorthand), true) => vec![shorthand],
                (None, false) => {
                    if model.upstream_model.is_some() {
                        bail!("{context}: `upstream_model` goes on each deployment");
                    }
                    model
                        .deployments
                        .iter()
                        .map(|deployment| (deployment.clone(), deployment.upstream_model.is_none()))
                        .collect()
                }
            };
            let mut deployments = Vec::new();
            for (index, (deployment, passes_requested_id)) in configured.into_iter().enumerate() {
                let context = format!("{context}.deployments[{index}]");
                let Some(provider) = self.providers.get(&deployment.provider) else {
                    bail!(
                        "model '{id}' names provider '{}', which is not configured",
                        deployment.provider
                    );
                };
                if model.embeddings && !provider.embeds() {
                    bail!(
                        "{context}: model '{id}' is an embeddings model, and provider '{}' serves no embeddings (only `openai`, `gemini` and `simulated` do)",
                        deployment.provider
                    );
                }
                let deployment_prices = price_schedule(model, &deployment.prices, &context)?;
                deployments.push(Deployment {
                    upstream_model: deployment.upstream_model.clone().unwrap_or_else(|| id.clone()),
                    provider: deployment.provider,
                    passes_requested_id,
                    priority: deployment.priority,
                    weight: deployment.weight,
                    prices: deployment_prices,
                    cooldown: provider.cooldown(),
                });
            }
            let created_at = match &model.created_at {
                Some(text) => chrono::DateTime::parse_from_rfc3339(text)
                    .with_context(|| format!("models.{id}.created_at is not RFC 3339"))?
                    .to_utc(),
                None => chrono::DateTime::UNIX_EPOCH,
            };
            models.push(Model {
                id: id.clone(),
                display_name: model.display_name.clone().unwrap_or_else(|| id.clone()),
                created_at,
                deployments,
                prices,
                class: model.class.clone(),
                default_max_tokens: model.default_max_tokens.max(1),
                max_output_tokens: model.max_output_tokens,
                max_input_tokens: model.max_input_tokens,
                embeddings: model.embeddings,
            });
        }
        models.sort_by(|left, right| {
            right
                .created_at
                .cmp(&left.created_at)
                .then(left.id.cmp(&right.id))
        });
        let aliases = self
            .aliases
            .iter()
            .map(|(pattern, target)| Alias {
                pattern: pattern.clone(),
                target: target.clone(),
            })
            .collect();
        Catalog::new(models, aliases).context("the model catalogue is invalid")
    }

    /// One client per configured provider.
    pub fn providers(&self) -> anyhow::Result<HashMap<String, Provider>> {
        let mut providers = HashMap::new();
        for (name, provider) in &self.providers {
            let read_key = |api_key: &Option<String>,
                            api_key_file: &Option<PathBuf>|
             -> anyhow::Result<Option<String>> {
                Ok(match (api_key, api_key_file) {
                    (Some(key), _) => Some(key.clone()),
                    (None, Some(path)) => Some(
                        std::fs::read_to_string(path)
                            .with_context(|| {
                                format!("providers.{name}.api_key_file: cannot read {}", path.display())
                            })?
                            .trim()
                            .to_owned(),
                    ),
                    (None, None) => None,
                })
            };
            let read_ca = |ca_file: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
                ca_file
                    .as_ref()
                    .map(|path| {
                        std::fs::read(path).with_context(|| {
                            format!("providers.{name}.ca_file: cannot read {}", path.display())
                        })
                    })
                    .transpose()
            };
            let built = match provider {
                ProviderConfig::Simulated {
                    tokens_per_second, ..
                } => Provider::Simulated(Simulated::new(SimulatedConfig {
                    tokens_per_second: *tokens_per_second,
                })),
                ProviderConfig::Anthropic {
                    base_url,
                    api_key,
                    api_key_file,
                    ca_file,
                    connect_timeout_seconds,
                    idle_timeout_seconds,
                    request_timeout_seconds,
                    ..
                } => Provider::Anthropic(
                    AnthropicClient::new(AnthropicConfig {
                        base_url: base_url.clone(),
                        api_key: read_key(api_key, api_key_file)?,
                        ca_pem: read_ca(ca_file)?,
                        connect_timeout: Duration::from_secs(*connect_timeout_seconds),
                        idle_timeout: Duration::from_secs(*idle_timeout_seconds),
                        request_timeout: Duration::from_secs(*request_timeout_seconds),
                    })
                    .with_context(|| format!("providers.{name}"))?,
                ),
                ProviderConfig::OpenAi {
                    base_url,
                    api_key,
                    api_key_file,
                    ca_file,
                    connect_timeout_seconds,
                    idle_timeout_seconds,
                    request_timeout_seconds,
                    max_tokens_field,
                    ..
                } => Provider::OpenAi(
                    OpenAiClient::new(OpenAiConfig {
                        base_url: base_url.clone(),
                        api_key: read_key(api_key, api_key_file)?,
                        ca_pem: read_ca(ca_file)?,
                        connect_timeout: Duration::from_secs(*connect_timeout_seconds),
                        idle_timeout: Duration::from_secs(*idle_timeout_seconds),
                        request_timeout: Duration::from_secs(*request_timeout_seconds),
                        max_tokens_field: match max_tokens_field.as_str() {
                            "max_tokens" => MaxTokensField::MaxTokens,
                            "max_completion_tokens" => MaxTokensField::MaxCompletionTokens,
                            other => bail!(
                                "providers.{name}.max_tokens_field '{other}' must be max_tokens or max_completion_tokens"
                            ),
                        },
                    })
                    .with_context(|| format!("providers.{name}"))?,
                ),
                ProviderConfig::Bedrock {
                    region,
                    endpoint,
                    ca_file,
                    connect_timeout_seconds,
                    idle_timeout_seconds,
                    request_timeout_seconds,
                    ..
                } => Provider::Bedrock(
                    BedrockClient::new(BedrockConfig {
                        region: region.clone(),
                        endpoint: endpoint.clone(),
                        credentials: self.aws_credentials(name, provider)?,
                        ca_pem: read_ca(ca_file)?,
                        connect_timeout: Duration::from_secs(*connect_timeout_seconds),
                        idle_timeout: Duration::from_secs(*idle_timeout_seconds),
                        request_timeout: Duration::from_secs(*request_timeout_seconds),
                    })
                    .with_context(|| format!("providers.{name}"))?,
                ),
                ProviderConfig::Vertex {
                    project,
                    region,
                    endpoint,
                    credentials_file,
                    ca_file,
                    connect_timeout_seconds,
                    idle_timeout_seconds,
                    request_timeout_seconds,
                    ..
                } => {
                    let path = credentials_file
                        .clone()
                        .or_else(|| {
                            self.cloud_environment
                                .get("GOOGLE_APPLICATION_CREDENTIALS")
                                .map(PathBuf::from)
                        })
                        .with_context(|| {
                            format!(
                                "providers.{name}: set credentials_file (or GOOGLE_APPLICATION_CREDENTIALS) to a service account key"
                            )
                        })?;
                    let text = std::fs::read_to_string(&path).with_context(|| {
                        format!("providers.{name}.credentials_file: cannot read {}", path.display())
                    })?;
                    let service_account = ServiceAccountKey::parse(&text)
                        .map_err(|error| anyhow::anyhow!("providers.{name}.credentials_file: {error}"))?;
                    Provider::Vertex(
                        VertexClient::new(VertexConfig {
                            project: project.clone(),
                            region: region.clone(),
                            endpoint: endpoint.clone(),
                            service_account,
                            ca_pem: read_ca(ca_file)?,
                            connect_timeout: Duration::from_secs(*connect_timeout_seconds),
                            idle_timeout: Duration::from_secs(*idle_timeout_seconds),
                            request_timeout: Duration::from_secs(*request_timeout_seconds),
                        })
                        .with_context(|| format!("providers.{name}"))?,
                    )
                }
                ProviderConfig::Gemini {
                    base_url,
                    api_key,
                    api_key_file,
                    ca_file,
                    connect_timeout_seconds,
                    idle_timeout_seconds,
                    request_timeout_seconds,
                    ..
                } => Provider::Gemini(
                    GeminiClient::new(GeminiConfig {
                        base_url: base_url.clone(),
                        api_key: read_key(api_key, api_key_file)?
                            .or_else(|| self.cloud_environment.get("GEMINI_API_KEY").map(str::to_owned)),
                        ca_pem: read_ca(ca_file)?,
                        connect_timeout: Duration::from_secs(*connect_timeout_seconds),
                        idle_timeout: Duration::from_secs(*idle_timeout_seconds),
                        request_timeout: Duration::from_secs(*request_timeout_seconds),
                    })
                    .with_context(|| format!("providers.{name}"))?,
                ),
            };
            providers.insert(name.clone(), built);
        }
        Ok(providers)
    }
}

impl Config {
    /// A Bedrock provider's credentials: its own keys, else the environment's, else a
    /// profile of the shared credentials file, as AWS's own tools look for them.
    fn aws_credentials(&self, name: &str, provider: &ProviderConfig) -> anyhow::Result<AwsCredentials> {
        let ProviderConfig::Bedrock {
            access_key_id,
            secret_access_key,
            secret_access_key_file,
            session_token,
            credentials_file,
            profile,
            ..
        } = provider
        else {
            bail!("providers.{name} is not a Bedrock provider");
        };
        if let Some(access_key_id) = access_key_id {
            let secret_access_key = match (secret_access_key, secret_access_key_file) {
                (Some(secret), _) => secret.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .with_context(|| {
                        format!(
                            "providers.{name}.secret_access_key_file: cannot read {}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned(),
                (None, None) => bail!("providers.{name}: access_key_id needs secret_access_key"),
            };
            return Ok(AwsCredentials {
                access_key_id: access_key_id.clone(),
                secret_access_key,
                session_token: session_token.clone(),
            });
        }
        let environment = &self.cloud_environment;
        if let (Some(access_key_id), Some(secret_access_key)) = (
            environment.get("AWS_ACCESS_KEY_ID"),
            environment.get("AWS_SECRET_ACCESS_KEY"),
        ) {
            return Ok(AwsCredentials {
                access_key_id: access_key_id.to_owned(),
                secret_access_key: secret_access_key.to_owned(),
                session_token: environment.get("AWS_SESSION_TOKEN").map(str::to_owned),
            });
        }
        let path = credentials_file
            .clone()
            .or_else(|| environment.get("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
            .or_else(|| {
                environment
                    .get("HOME")
                    .map(|home| Path::new(home).join(".aws").join("credentials"))
            })
            .with_context(|| format!("providers.{name}: no AWS credentials are configured"))?;
        let profile = profile
            .as_deref()
            .or_else(|| environment.get("AWS_PROFILE"))
            .unwrap_or("default");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "providers.{name}: no AWS credentials in the configuration or environment, and {} cannot be read",
                path.display()
            )
        })?;
        AwsCredentials::from_credentials_file(&text, profile).with_context(|| {
            format!(
                "providers.{name}: profile '{profile}' of {} has no keys",
                path.display()
            )
        })
    }
}

/// Prices with each key `over` sets replacing `base`'s (a deployment's over its model's, a
/// dated change over the prices before it). Setting `input` re-derives the cache prices
/// that are not set alongside it.
fn merge_prices(base: &PricesConfig, over: &PricesConfig) -> PricesConfig {
    let input_overridden = over.input.is_some();
    let pick = |own: &Option<String>, inherited: &Option<String>, derived_from_input: bool| {
        own.clone().or_else(|| {
            (!(derived_from_input && input_overridden))
                .then(|| inherited.clone())
                .flatten()
        })
    };
    PricesConfig {
        input: pick(&over.input, &base.input, false),
        output: pick(&over.output, &base.output, false),
        cache_write_5m: pick(&over.cache_write_5m, &base.cache_write_5m, true),
        cache_write_1h: pick(&over.cache_write_1h, &base.cache_write_1h, true),
        cache_read: pick(&over.cache_read, &base.cache_read, true),
        per_request: pick(&over.per_request, &base.per_request, false),
        per_image: pick(&over.per_image, &base.per_image, false),
        fast_multiplier: pick(&over.fast_multiplier, &base.fast_multiplier, false),
        data_residency: over.data_residency.or(base.data_residency),
        web_search_per_thousand: pick(
            &over.web_search_per_thousand,
            &base.web_search_per_thousand,
            false,
        ),
        long_context: over.long_context.clone().or_else(|| base.long_context.clone()),
    }
}

/// The prices of `model` over time, each entry with `overrides` (a deployment's keys) on
/// top: the model's own keys from the beginning, then each dated change in order.
fn price_schedule(
    model: &ModelConfig,
    overrides: &PricesConfig,
    path: &str,
) -> anyhow::Result<PriceSchedule> {
    let mut current = model.prices.clone();
    let mut entries = vec![(
        chrono::DateTime::UNIX_EPOCH,
        model_prices(&merge_prices(&current, overrides), path, model.embeddings)?,
    )];
    for (index, change) in model.price_changes.iter().enumerate() {
        let context = format!("{path}.price_changes[{index}]");
        let from = parse_price_date(&change.from).with_context(|| format!("{context}.from"))?;
        current = merge_prices(&current, &change.prices);
        entries.push((
            from,
            model_prices(&merge_prices(&current, overrides), &context, model.embeddings)?,
        ));
    }
    PriceSchedule::new(entries).with_context(|| format!("{path}.price_changes"))
}

/// A date ("2026-10-07", midnight UTC) or an RFC 3339 instant.
fn parse_price_date(text: &str) -> anyhow::Result<tollgate_core::Timestamp> {
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(instant) => Ok(instant.to_utc()),
        Err(_) => bail!("'{text}' is neither a date (2026-10-07) nor an RFC 3339 instant"),
    }
}

/// Exact prices from their decimal strings. `input` and `output` are required, except
/// `output` for an `embeddings` model, which generates none (zero); cache prices follow the
/// contract's rules unless set (rounded up to whole nano-dollars per token); unit charges
/// default to zero.
fn model_prices(config: &PricesConfig, path: &str, embeddings: bool) -> anyhow::Result<ModelPrices> {
    let price = |field: &str, text: &str| {
        TokenPrice::parse_usd_per_mtok(text).with_context(|| format!("{path}.{field}"))
    };
    let output = config.output.as_deref().or(embeddings.then_some("0"));
    let (Some(input), Some(output)) = (&config.input, output) else {
        bail!(
            "{path} has no price: set `input` and `output` (USD per million tokens); no model is served for free"
        );
    };
    let set = |field: &str, text: &Option<String>| text.as_deref().map(|text| price(field, text)).transpose();
    let mut prices = ModelPrices::with_cache_prices(
        price("input", input)?,
        price("output", output)?,
        set("cache_write_5m", &config.cache_write_5m)?,
        set("cache_write_1h", &config.cache_write_1h)?,
        set("cache_read", &config.cache_read)?,
    );
    if let Some(text) = &config.per_request {
        prices.per_request = usd(text).with_context(|| format!("{path}.per_request"))?;
    }
    if let Some(text) = &config.per_image {
        prices.per_image = usd(text).with_context(|| format!("{path}.per_image"))?;
    }
    if let Some(text) = &config.web_search_per_thousand {
        prices.web_search_per_thousand =
            usd(text).with_context(|| format!("{path}.web_search_per_thousand"))?;
    }
    if let Some(text) = &config.fast_multiplier {
        prices.fast_multiplier =
            Some(Multiplier::parse(text).with_context(|| format!("{path}.fast_multiplier"))?);
    }
    prices.data_residency = config.data_residency.unwrap_or(false);
    let mut previous = None;
    for (index, tier) in config.long_context.iter().flatten().enumerate() {
        let context = format!("{path}.long_context[{index}]");
        if previous.is_some_and(|threshold| tier.above_input_tokens <= threshold) {
            bail!("{context}.above_input_tokens: tiers go by ascending threshold");
        }
        previous = Some(tier.above_input_tokens);
        let tier_price = |field: &str, text: &Option<String>| {
            text.as_deref()
                .map(|text| {
                    TokenPrice::parse_usd_per_mtok(text).with_context(|| format!("{context}.{field}"))
                })
                .transpose()
        };
        prices.prompt_tiers.push(PromptTier {
            above_prompt_tokens: tier.above_input_tokens,
            input: tier_price("input", &tier.input)?,
            output: tier_price("output", &tier.output)?,
            cache_write_5m: tier_price("cache_write_5m", &tier.cache_write_5m)?,
            cache_write_1h: tier_price("cache_write_1h", &tier.cache_write_1h)?,
            cache_read: tier_price("cache_read", &tier.cache_read)?,
        });
    }
    Ok(prices)
}

impl Config {
    /// The tier ladder, limit sets and programmes. Every tier and every assignable limit set
    /// must carry rate limits for every model class of the catalogue.
    pub fn billing_policy(&self) -> anyhow::Result<BillingPolicy> {
        let classes: BTreeSet<&str> = self.models.values().map(|model| model.class.as_str()).collect();
        let mut tiers = Vec::new();
        for tier in &self.tiers {
            let context = format!("tiers '{}'", tier.name);
            let limits = limit_set(
                &tier.name,
                &tier.monthly_spend_limit_usd,
                &tier.max_single_purchase_usd,
                tier.count_tokens_requests_per_minute,
                &tier.rate_limits,
            )
            .with_context(|| context.clone())?;
            require_classes(&limits, &classes).with_context(|| context.clone())?;
            tiers.push(Tier {
                limits,
                cumulative_purchases_min: usd(&tier.cumulative_purchases_usd)
                    .with_context(|| context.clone())?,
            });
        }
        let ladder = TierLadder::new(tiers).context("tiers")?;
        let mut limit_sets = BTreeMap::new();
        for (name, set) in &self.limit_sets {
            let context = format!("limit_sets.{name}");
            let limits = limit_set(
                name,
                &set.monthly_spend_limit_usd,
                &set.max_single_purchase_usd,
                set.count_tokens_requests_per_minute,
                &set.rate_limits,
            )
            .with_context(|| context.clone())?;
            limit_sets.insert(name.clone(), limits);
        }
        let mut programmes = BTreeMap::new();
        for (name, programme) in &self.programmes {
            if !limit_sets.contains_key(&programme.limit_set) {
                bail!(
                    "programmes.{name} names limit set '{}', which is not configured",
                    programme.limit_set
                );
            }
            programmes.insert(name.clone(), programme.limit_set.clone());
        }
        Ok(BillingPolicy {
            ladder,
            limit_sets,
            programmes,
        })
    }
}

/// A non-negative USD amount.
fn usd(text: &str) -> anyhow::Result<NanoUsd> {
    let amount = NanoUsd::parse_usd(text)?;
    if amount.is_negative() {
        bail!("'{text}' must not be negative");
    }
    Ok(amount)
}

fn limit_set(
    name: &str,
    monthly_spend_limit_usd: &Option<String>,
    max_single_purchase_usd: &Option<String>,
    count_tokens_requests_per_minute: u64,
    rate_limits: &BTreeMap<String, RateLimitsConfig>,
) -> anyhow::Result<LimitSet> {
    let optional = |field: &str, text: &Option<String>| -> anyhow::Result<Option<NanoUsd>> {
        text.as_deref()
            .map(usd)
            .transpose()
            .with_context(|| field.to_owned())
    };
    Ok(LimitSet {
        name: name.to_owned(),
        monthly_spend_limit: optional("monthly_spend_limit_usd", monthly_spend_limit_usd)?,
        max_single_purchase: optional("max_single_purchase_usd", max_single_purchase_usd)?,
        count_tokens_requests_per_minute,
        rate_limits: rate_limits
            .iter()
            .map(|(class, limits)| {
                (
                    class.clone(),
                    RateLimits {
                        requests_per_minute: limits.requests_per_minute,
                        input_tokens_per_minute: limits.input_tokens_per_minute,
                        output_tokens_per_minute: limits.output_tokens_per_minute,
                    },
                )
            })
            .collect(),
    })
}

fn require_classes(limits: &LimitSet, classes: &BTreeSet<&str>) -> anyhow::Result<()> {
    for class in classes {
        if !limits.rate_limits.contains_key(*class) {
            bail!("no rate limits for model class '{class}'");
        }
    }
    Ok(())
}

/// Deep-merges `layer` into `base`: tables merge key by key, anything else replaces.
/// The URL with any password replaced by `***`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => merge(existing, incoming),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> anyhow::Result<()> {
    match path {
        [] => bail!("empty variable name"),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set_path(inner, rest, value),
                _ => bail!("'{first}' is not a table"),
            }
        }
    }
}

/// Environment values are text; whole numbers and booleans become TOML numbers and
/// booleans so that numeric settings can be set too. Prices are strings in any case.
fn env_value(text: &str) -> toml::Value {
    if let Ok(number) = text.parse::<i64>() {
        return toml::Value::Integer(number);
    }
    match text {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests;
