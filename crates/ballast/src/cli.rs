//! Command-line arguments (clap structs only). The config file describes the deployment; these flags
//! describe how to run this process.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "ballast",
    version,
    about = "The LLM gateway that keeps your app up when a provider goes down"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `warn,ballast_server=debug`.
    #[arg(long, global = true, env = "BALLAST_LOG", default_value = "info")]
    pub log: String,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Validate a configuration file and exit (non-zero when invalid).
    Check(CheckArgs),
    /// Run the gateway in front of two built-in simulated providers: no API keys needed.
    Demo(DemoArgs),
    /// Run the provider simulator (Anthropic, OpenAI and Gemini APIs with fault injection).
    Sim(SimArgs),
    /// List the incidents kept in an incident store (newest first); `incidents followup` tracks
    /// what is to be done about them.
    Incidents(IncidentsArgs),
    /// Show a running gateway's targets, breakers, detectors, open incidents and overdue follow-ups.
    Status(StatusArgs),
    /// A gateway's configuration: the versions it ran, and live changes to a running one (apply a
    /// file in a staged rollout, follow or abort the rollout, roll back to an earlier version).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Replay a real outage against a gateway and its providers under load, and report survival.
    Chaos(ChaosArgs),
}

#[derive(Args, Debug)]
pub struct ChaosArgs {
    #[command(subcommand)]
    pub command: ChaosCommand,
}

#[derive(Subcommand, Debug)]
pub enum ChaosCommand {
    /// Run a scenario (a built-in name or a TOML file); non-zero exit when a pass criterion fails.
    Run(ChaosRunArgs),
    /// List the built-in scenarios.
    List,
    /// Validate a scenario file (or a built-in) and show its phases.
    Check {
        /// A scenario file or a built-in name.
        scenario: String,
    },
}

#[derive(Args, Debug)]
pub struct ChaosRunArgs {
    /// A built-in scenario name (see `ballast chaos list`) or a scenario TOML file.
    pub scenario: String,
    /// The scenario's test compression: the same timeline in seconds (for CI).
    #[arg(long)]
    pub quick: bool,
    /// Compress the scenario's time by this factor instead of its own.
    #[arg(long)]
    pub compression: Option<f64>,
    /// Requests a second instead of the scenario's rate.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Skip the "without Ballast" run (a naive client straight to the primary).
    #[arg(long)]
    pub no_baseline: bool,
    /// Run against this gateway instead of starting one (with --sim for each simulator).
    #[arg(long)]
    pub gateway: Option<String>,
    /// A simulator the scenario names, already running: NAME=URL (repeatable; needs --gateway).
    #[arg(long)]
    pub sim: Vec<String>,
    /// The external gateway's `[admin] key`, to read its incidents.
    #[arg(long, env = "BALLAST_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the timeline chart as SVG to this file.
    #[arg(long)]
    pub chart: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The gateway's address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The gateway's `[admin] key`.
    #[arg(long, env = "BALLAST_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: String,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IncidentsArgs {
    #[command(subcommand)]
    pub command: Option<IncidentsCommand>,
    /// The incident store (an SQLite file). Default: the configuration's `[incidents] store`, else
    /// ./ballast-incidents.sqlite.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Configuration file naming the store.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// How many incidents to list.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// The configurations `ballast serve` started with, newest first: version, hash, when, and
    /// what changed from the one before (secrets never kept).
    History(ConfigHistoryArgs),
    #[command(flatten)]
    Live(LiveConfigCommand),
}

/// Live configuration changes, through a running gateway's admin API (`[admin] key`).
#[derive(Subcommand, Debug)]
pub enum LiveConfigCommand {
    /// Apply a configuration file to a running gateway, rolled out in steps.
    ///
    /// POST /admin/config with the file. The gateway checks it, probes its targets (unless
    /// --no-probe) and keeps it as a new version, then rolls it out in steps: a growing share of
    /// requests, each step held while the new version is compared with the current one, rolled
    /// back by the gateway when the new one does worse.
    ///
    /// Exit 0 when accepted; 1 when refused (the reasons, naming routes and targets, on stderr) or
    /// when a rollout is already running. With --wait: 0 when promoted, 2 when rolled back, 1 after
    /// --timeout.
    Apply(ConfigApplyArgs),
    /// Show a running gateway's rollout: its state and the canary against the baseline.
    ///
    /// GET /admin/rollout: the state (idle, canary, promoted, rolled_back), version, step and share
    /// of requests, and per route the canary against the baseline: requests, degraded answers,
    /// latency, wrong-script answers.
    Rollout(GatewayArgs),
    /// Stop a running rollout and roll it back.
    ///
    /// POST /admin/rollout/abort: every request goes to the version that served before the
    /// rollout. Exit 1 when no rollout is running.
    Abort(GatewayArgs),
    /// Put an earlier configuration version back on a running gateway, at once.
    ///
    /// POST /admin/config/rollback: by default the version before the current one (`ballast config
    /// history` lists the versions). The gateway applies a rollback at once. Exit 0 when accepted,
    /// 1 when refused.
    Rollback(ConfigRollbackArgs),
}

/// Which running gateway, its admin key, and the output format.
#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// The gateway's base URL.
    #[arg(long, env = "BALLAST_GATEWAY", default_value = "http://127.0.0.1:8080")]
    pub gateway: String,
    /// The gateway's `[admin] key` (sent as `Authorization: Bearer KEY`).
    #[arg(long, env = "BALLAST_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Print the gateway's JSON answers as they are instead of text (the exit status is the same).
    #[arg(long)]
    pub json: bool,
}

/// Following a rollout to its end.
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Once accepted, follow the rollout (GET /admin/rollout every second), printing each step,
    /// until it is promoted (exit 0) or rolled back (exit 2, with the gateway's reason).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up following after this long (exit 1; the rollout goes on), e.g. 30m, 1h.
    #[arg(long, requires = "wait", default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct ConfigApplyArgs {
    /// The configuration file (TOML), sent as it is.
    pub file: PathBuf,
    /// No staged rollout: the new version takes every request as soon as it is accepted.
    #[arg(long)]
    pub now: bool,
    /// Apply it even if this configuration was rolled back before (refused otherwise).
    #[arg(long)]
    pub force: bool,
    /// Accept it without probing its targets first (the static check still runs).
    #[arg(long)]
    pub no_probe: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Args, Debug)]
pub struct ConfigRollbackArgs {
    /// The version to put back (as `ballast config history` shows it). Default: the version
    /// before the current one.
    #[arg(value_parser = id)]
    pub version: Option<u64>,
    /// Put it back even if the gateway would refuse it otherwise (e.g. it was rolled back before).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Args, Debug)]
pub struct ConfigHistoryArgs {
    /// The incident store (an SQLite file). Default: the configuration's `[incidents] store`, else
    /// ./ballast-incidents.sqlite.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Configuration file naming the store.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also print each version's configuration (redacted TOML), with --json.
    #[arg(long, requires = "json")]
    pub full: bool,
}

#[derive(Subcommand, Debug)]
pub enum IncidentsCommand {
    /// Follow-up items of incidents (what to do, who, by when), through a running gateway's admin
    /// API; `list` also reads a store file.
    #[command(subcommand)]
    Followup(FollowupCommand),
}

#[derive(Subcommand, Debug)]
pub enum FollowupCommand {
    /// Add a follow-up to an incident.
    Add(FollowupAddArgs),
    /// List follow-ups, soonest due first (overdue ones marked).
    List(FollowupListArgs),
    /// Mark follow-ups done.
    Done(FollowupIdsArgs),
    /// Drop follow-ups (no longer worth doing).
    Drop(FollowupIdsArgs),
    /// Change a follow-up's owner, due date or text, or reopen it.
    Edit(FollowupEditArgs),
}

/// Where the gateway's admin API is (as for `ballast status`).
#[derive(Args, Debug, Clone)]
pub struct AdminApiArgs {
    /// The gateway's address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The gateway's `[admin] key`.
    #[arg(long, env = "BALLAST_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

/// An id as `ballast incidents` shows it: `12` or `#12`.
fn id(s: &str) -> Result<u64, String> {
    match s.trim_start_matches('#').parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not an id (1, 2, 3…)")),
    }
}

#[derive(Args, Debug)]
pub struct FollowupAddArgs {
    /// The incident's id (as `ballast incidents` and `ballast status` show it).
    #[arg(value_parser = id)]
    pub incident: u64,
    /// Who does it.
    #[arg(long)]
    pub owner: String,
    /// By when: a date (2026-03-10: by the end of that day, UTC) or an RFC 3339 date-time
    /// (2026-03-10T17:00:00Z).
    #[arg(long)]
    pub due: String,
    /// What to do (the words are joined with spaces).
    #[arg(required = true, num_args = 1..)]
    pub text: Vec<String>,
    #[command(flatten)]
    pub api: AdminApiArgs,
    /// Print the follow-up as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FollowupStateArg {
    Open,
    Done,
    Dropped,
}

#[derive(Args, Debug)]
pub struct FollowupListArgs {
    /// Only follow-ups in this state.
    #[arg(long, value_enum)]
    pub state: Option<FollowupStateArg>,
    /// Only overdue follow-ups (open past their due date).
    #[arg(long)]
    pub overdue: bool,
    /// Only the follow-ups of this incident.
    #[arg(long, value_parser = id)]
    pub incident: Option<u64>,
    /// Read this incident store (an SQLite file) instead of asking a running gateway.
    #[arg(long, conflicts_with = "config")]
    pub store: Option<PathBuf>,
    /// Read the incident store this configuration names instead of asking a running gateway.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub api: AdminApiArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FollowupIdsArgs {
    /// The follow-ups' ids.
    #[arg(required = true, num_args = 1.., value_parser = id)]
    pub ids: Vec<u64>,
    #[command(flatten)]
    pub api: AdminApiArgs,
}

#[derive(Args, Debug)]
pub struct FollowupEditArgs {
    /// The follow-up's id.
    #[arg(value_parser = id)]
    pub id: u64,
    /// A new owner.
    #[arg(long)]
    pub owner: Option<String>,
    /// A new due date (a date or an RFC 3339 date-time).
    #[arg(long)]
    pub due: Option<String>,
    /// New text.
    #[arg(long)]
    pub text: Option<String>,
    /// Open it again (after done or dropped).
    #[arg(long)]
    pub reopen: bool,
    #[command(flatten)]
    pub api: AdminApiArgs,
    /// Print the follow-up as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Configuration file. Default: ./ballast.toml if present, else a configuration built from
    /// ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY and OLLAMA_HOST.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Listen on this address instead of the configuration's `server.listen` (port 0: any free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Allow listening on a non-loopback address with no gateway keys configured.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Take the configuration file again whenever its content changes (through the gate and the
    /// staged rollout, as `SIGHUP` and `POST /admin/config` do).
    #[arg(long)]
    pub watch: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Configuration file to validate.
    #[arg(long, short, default_value = "ballast.toml")]
    pub config: PathBuf,
    /// Also send one tiny request (8 output tokens) to every target, whole and streamed, and
    /// report per target and per route; non-zero exit when a route would have no working target.
    #[arg(long)]
    pub probe: bool,
    /// With --probe: also check that every target calls a tool (a forced call to a tiny tool);
    /// non-zero exit when one does not.
    #[arg(long, requires = "probe")]
    pub tools: bool,
    /// With --probe: one probe's time limit (e.g. 10s, 500ms).
    #[arg(long, requires = "probe", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// With --probe: how many targets are probed at once.
    #[arg(long, requires = "probe", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// With --probe or --against: print the report as JSON (see the README) instead of a table
    /// (both: one object with `probe` and `against`).
    #[arg(long)]
    pub json: bool,
    /// Compare with a running gateway (http(s)://HOST:PORT: its GET /admin/config) or a file:
    /// routes, targets, tiers, weights, policies, providers, and routes that lose redundancy.
    #[arg(long, value_name = "URL-or-FILE")]
    pub against: Option<String>,
    /// With --against: a route left with a single provider or target is an error, not a warning.
    #[arg(long, requires = "against")]
    pub strict: bool,
    /// With --against URL: the gateway's `[admin] key`.
    #[arg(long, env = "BALLAST_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Gateway address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Simulated time to first token, in milliseconds.
    #[arg(long, default_value_t = 150)]
    pub ttft_ms: u64,
    /// Simulated delay between streamed tokens, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub token_delay_ms: u64,
}

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Address to listen on (port 0: any free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// Seed for generated answers and fault draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Time to first token, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Delay between streamed tokens, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub token_delay_ms: u64,
    /// A fault to inject from the start (repeatable): down, down@0.5, hang@0.2, error:503@0.16,
    /// rate_limit:1, slow:10, truncate@0.3, truncate:reset,after_tokens=20 (modes: eof, reset,
    /// error_event, stall), reject_prefill, role_then_silence, corrupt:thai@0.1,
    /// degrade:repeat@0.05 (degraded answers: empty, repeat, short, invalid_json), hostile:huge_index,
    /// hostile:no_terminator,bytes=1048576@0.5/openai (modes: huge_index, no_terminator, huge_event,
    /// invalid_utf8, deep_nesting, endless_headers, trickle, huge_headers). Change at run time via
    /// /_sim/faults.
    #[arg(long = "fault")]
    pub faults: Vec<String>,
    /// Accept parameters a model refuses (both temperature and top_p for Claude 4.5 models, sampling
    /// or max_tokens for OpenAI reasoning models) instead of answering the real API's 400.
    #[arg(long)]
    pub lenient_params: bool,
    /// Require this API key, as each real API expects it (x-api-key, Bearer, x-goog-api-key).
    #[arg(long)]
    pub require_key: Option<String>,
}
