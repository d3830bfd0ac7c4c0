//! Live configuration changes, governed: a running gateway takes a new configuration (`POST
//! /admin/config`, `SIGHUP`, a watched file) only through the static check and the live gate, then
//! serves it to a canary share of requests while the rest stay on the current one, compares the two
//! with `ballast_core::rollout`'s sequential test, and promotes it step by step or rolls it back,
//! opening an incident that names the change.
//!
//! A configuration is a *generation*: an [`AppState`] (built by [`AppState::next`], sharing with the
//! others every target's live state by label) and its router. The accept loop asks the [`Gateway`]
//! which generation serves each request as it arrives; the request keeps that generation's
//! `Arc<AppState>` until its last byte, so a request in flight finishes on the version it started
//! with whatever happens to the rollout meanwhile.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use ballast_core::config::Config;
use ballast_core::config::diff;
use ballast_core::config::env::ProcessEnv;
use ballast_core::rollout::{Action, ArmStats, Rollout};
use ballast_core::signal::{Evidence, Signal};

use crate::AppState;
use crate::gate::{self, GateOptions};
use crate::runtime::lock;
use crate::store::{self, VersionRow};

/// How often a running rollout compares the two versions.
pub const TICK: Duration = Duration::from_millis(250);
/// Versions kept in memory (this process's changes; the store keeps every one).
const KEEP_VERSIONS: usize = 200;

/// The slot through which a generation's admin handlers find the gateway serving it (empty when a
/// test drives [`crate::app`] without one). Shared by every generation of a process.
pub(crate) type GatewaySlot = Arc<OnceLock<Weak<Gateway>>>;

/// One configuration, ready to serve.
pub struct Generation {
    pub state: Arc<AppState>,
    router: Router,
    /// Its version number (in the store, or this process's count without one).
    pub version: u64,
    /// [`store::config_hash`] of its redacted TOML.
    pub hash: String,
}

struct Canary {
    generation: Arc<Generation>,
    /// Of a million requests, how many it serves.
    share_ppm: AtomicU32,
}

/// A rollout in progress or the last one, for `GET /admin/rollout`.
struct Watch {
    rollout: Rollout,
    version: u64,
    hash: String,
    summary: String,
    comparison: Vec<(String, ArmStats, ArmStats)>,
}

/// The process's gateway: the generation serving, and the one being rolled out.
pub struct Gateway {
    current: ArcSwap<Generation>,
    canary: ArcSwapOption<Canary>,
    /// One change at a time.
    changing: tokio::sync::Mutex<()>,
    watch: Mutex<Option<Watch>>,
    abort: tokio::sync::Notify,
    /// This process's versions (newest last); with a store, the store has them all.
    versions: Mutex<Vec<VersionRow>>,
    /// The file the configuration came from, for `SIGHUP` and `--watch`.
    config_path: Option<PathBuf>,
}

/// How a change is to be taken.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    /// Skip the canary steps (an emergency; recorded as such).
    pub now: bool,
    /// Take a configuration that was rolled back before.
    pub force: bool,
    /// Send the live gate's probes first (`None`: as `[rollout] probe` of the new configuration says).
    pub probe: Option<bool>,
}

/// Why a change was not taken.
#[derive(Debug)]
pub enum ApplyError {
    /// The configuration does not validate, or the gate refused it (422).
    Refused {
        message: String,
        problems: Vec<String>,
    },
    /// Another change is being taken or rolled out (409).
    Busy(String),
    /// The same configuration was rolled back before (409, unless forced).
    RolledBackBefore(String),
    /// It is the configuration serving (200: nothing to do).
    Unchanged(u64),
}

impl ApplyError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApplyError::Refused { message, problems } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": {"message": message, "problems": problems}}),
            ),
            ApplyError::Busy(m) | ApplyError::RolledBackBefore(m) => {
                (StatusCode::CONFLICT, json!({"error": {"message": m}}))
            }
            ApplyError::Unchanged(v) => (
                StatusCode::OK,
                json!({"version": v, "unchanged": true, "summary": "no change: this configuration is the one serving"}),
            ),
        };
        (status, Json(body)).into_response()
    }
}

impl Gateway {
    /// A gateway serving `state`, whose configuration came from `config_path` (if a file).
    pub fn new(state: Arc<AppState>, config_path: Option<PathBuf>) -> Arc<Self> {
        let hash = store::config_hash(&diff::redacted_toml(&state.config));
        Arc::new_cyclic(|weak: &Weak<Gateway>| {
            let _ = state.gateway.set(weak.clone());
            let first = Generation {
                router: crate::app(state.clone()),
                state,
                version: 1,
                hash,
            };
            Gateway {
                current: ArcSwap::from_pointee(first),
                canary: ArcSwapOption::empty(),
                changing: tokio::sync::Mutex::new(()),
                watch: Mutex::new(None),
                abort: tokio::sync::Notify::new(),
                versions: Mutex::new(Vec::new()),
                config_path,
            }
        })
    }

    /// Gives the serving configuration its version number: the store's newest version with its
    /// hash (`Background::start` keeps it there), else a new one in memory. Call once the store is
    /// open.
    pub async fn settle_version(&self) {
        let rows = self.versions().await;
        let cur = self.current();
        let id = match rows.iter().rev().find(|r| r.hash == cur.hash) {
            Some(v) => v.id,
            None => {
                let id = rows.iter().map(|r| r.id).max().unwrap_or(0) + 1;
                let mut v = lock(&self.versions);
                v.push(VersionRow {
                    id,
                    hash: cur.hash.clone(),
                    applied_at: SystemTime::now(),
                    source: "ballast serve (at start)".to_owned(),
                    summary: "the configuration the gateway started with".to_owned(),
                    outcome: "applied".to_owned(),
                    config: diff::redacted_toml(&cur.state.config),
                });
                id
            }
        };
        if id != cur.version {
            self.current.store(Arc::new(Generation {
                state: cur.state.clone(),
                router: cur.router.clone(),
                version: id,
                hash: cur.hash.clone(),
            }));
        }
    }

    /// The generation serving (all traffic but a canary's share).
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// The state of the generation serving.
    pub fn state(&self) -> Arc<AppState> {
        self.current.load().state.clone()
    }

    /// The router for a request to `path` arriving now: the canary's for its share of the
    /// client API requests, else the current one's (admin, metrics and health always).
    fn router_for(&self, path: &str) -> Router {
        if path.starts_with("/v1")
            && let Some(c) = &*self.canary.load()
        {
            let ppm = c.share_ppm.load(Ordering::Relaxed);
            if ppm > 0 && fastrand::u32(0..1_000_000) < ppm {
                return c.generation.router.clone();
            }
        }
        self.current.load().router.clone()
    }

    /// A hyper service routing each request through the generation that takes it.
    pub fn service(self: &Arc<Self>) -> GatewayService {
        GatewayService(self.clone())
    }

    /// Reads the configuration file again and takes it (`SIGHUP`, a watched file's change).
    pub async fn reload_file(self: &Arc<Self>, source: &str) -> Result<Value, ApplyError> {
        let Some(path) = self.config_path.clone() else {
            return Err(ApplyError::Refused {
                message: "the gateway was not started from a configuration file".to_owned(),
                problems: Vec::new(),
            });
        };
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) => {
                return Err(ApplyError::Refused {
                    message: format!("cannot read {}: {e}", path.display()),
                    problems: Vec::new(),
                });
            }
        };
        self.apply(&text, source, ApplyOptions::default()).await
    }

    /// The file `SIGHUP` and `--watch` read.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.as_deref()
    }

    /// Takes `text` as the next configuration: validated, probed by the gate (unless told not to),
    /// then rolled out by the steps of its `[rollout]` (or at once with `now`). Returns what was
    /// accepted; the rollout goes on in the background.
    pub async fn apply(
        self: &Arc<Self>,
        text: &str,
        source: &str,
        opts: ApplyOptions,
    ) -> Result<Value, ApplyError> {
        let config = Config::from_toml(text, &ProcessEnv).map_err(|e| ApplyError::Refused {
            message: "the configuration does not validate".to_owned(),
            problems: e.to_string().lines().map(str::to_owned).collect(),
        })?;
        self.take(config, source, opts).await
    }

    async fn take(
        self: &Arc<Self>,
        mut config: Config,
        source: &str,
        opts: ApplyOptions,
    ) -> Result<Value, ApplyError> {
        let Ok(_one) = self.changing.try_lock() else {
            return Err(ApplyError::Busy(
                "another configuration change is being taken".to_owned(),
            ));
        };
        if let Some(c) = &*self.canary.load() {
            return Err(ApplyError::Busy(format!(
                "version {} is being rolled out: wait for it to end, or abort it (ballast config abort)",
                c.generation.version
            )));
        }
        let current = self.current();
        // Where incidents are kept is the process's: a file that does not say keeps the serving one
        // (`ballast serve` fills in a default store).
        if !config.incidents.store_set {
            config.incidents.store = current.state.config.incidents.store.clone();
        }
        let redacted = diff::redacted_toml(&config);
        let hash = store::config_hash(&redacted);
        if hash == current.hash {
            return Err(ApplyError::Unchanged(current.version));
        }
        let versions = self.versions().await;
        if !opts.force
            && let Some(v) = versions
                .iter()
                .rev()
                .find(|v| v.hash == hash && v.outcome.starts_with("rolled back"))
        {
            return Err(ApplyError::RolledBackBefore(format!(
                "this configuration (hash {hash}) is version {}, which was {}; apply it again \
                 unchanged only with --force",
                v.id, v.outcome
            )));
        }
        let mut warnings = restart_only(&current.state.config, &config);
        let summary = diff::diff(&current.state.config, &config).summary();
        let probe = opts.probe.unwrap_or(config.rollout.probe);
        let gate_report = if probe {
            let report = gate::check_with(
                config.clone(),
                current.state.transport.clone(),
                &GateOptions::default(),
            )
            .await
            .map_err(|e| ApplyError::Refused {
                message: e.to_string(),
                problems: Vec::new(),
            })?;
            if !report.ok {
                return Err(ApplyError::Refused {
                    message: "the live gate refused the configuration".to_owned(),
                    problems: report.problems,
                });
            }
            warnings.extend(report.warnings.iter().cloned());
            Some(report)
        } else {
            None
        };
        let settings = config.rollout.clone();
        let state = current
            .state
            .next(config)
            .map_err(|e| ApplyError::Refused {
                message: e.to_string(),
                problems: Vec::new(),
            })?;
        let state = Arc::new(state);
        let id = versions
            .iter()
            .map(|v| v.id)
            .max()
            .unwrap_or(current.version)
            .max(current.version)
            + 1;
        let at_once = opts.now || settings.steps.is_empty();
        let outcome = if opts.now {
            "promoted at once (--now: no canary)"
        } else if at_once {
            "promoted at once (no rollout steps)"
        } else {
            "canary"
        };
        let row = VersionRow {
            id,
            hash: hash.clone(),
            applied_at: SystemTime::now(),
            source: source.to_owned(),
            summary: summary.clone(),
            outcome: outcome.to_owned(),
            config: redacted,
        };
        self.keep_version(&state, row);
        let generation = Arc::new(Generation {
            router: crate::app(state.clone()),
            state,
            version: id,
            hash: hash.clone(),
        });
        let now = tokio::time::Instant::now();
        let rollout = if at_once {
            // Promoted from the start: no steps.
            let mut now_settings = settings.clone();
            now_settings.steps.clear();
            Rollout::new(&now_settings, now)
        } else {
            Rollout::new(&settings, now)
        };
        tracing::warn!(
            version = id,
            hash = hash.as_str(),
            source,
            "configuration version {id} taken: {summary}; {}",
            if at_once {
                "serving it now".to_owned()
            } else {
                format!("rolling it out in {} steps", settings.steps.len())
            }
        );
        if at_once {
            *lock(&self.watch) = Some(Watch {
                rollout: rollout.clone(),
                version: id,
                hash: hash.clone(),
                summary: summary.clone(),
                comparison: Vec::new(),
            });
            self.promote(generation);
        } else {
            // The baseline counts from now: what the current version served before is not compared.
            let base0: Vec<ArmStats> = generation
                .state
                .config
                .routes
                .iter()
                .map(|r| {
                    current
                        .state
                        .route(&r.name)
                        .map(|j| current.state.telemetry.arm(j))
                        .unwrap_or_default()
                })
                .collect();
            let share = rollout.share();
            self.canary.store(Some(Arc::new(Canary {
                generation: generation.clone(),
                share_ppm: AtomicU32::new(ppm(share)),
            })));
            *lock(&self.watch) = Some(Watch {
                rollout: rollout.clone(),
                version: id,
                hash: hash.clone(),
                summary: summary.clone(),
                comparison: Vec::new(),
            });
            tokio::spawn(self.clone().drive(generation, current, base0, rollout));
        }
        Ok(json!({
            "version": id,
            "hash": hash,
            "summary": summary,
            "source": source,
            "warnings": warnings,
            "gate": gate_report.map(|r| json!({"ok": r.ok, "targets": r.targets.len(), "cost_usd": r.cost_usd})),
            "rollout": self.status_json(),
        }))
    }

    /// Serves `generation` to everyone from now on.
    fn promote(&self, generation: Arc<Generation>) {
        generation.state.capacity.show();
        self.current.store(generation);
        self.canary.store(None);
        // Earlier changes' regressions are settled by a version that made it through.
        let incidents = &self.state().telemetry.incidents;
        incidents.resolve_every(
            Signal::ConfigRegression,
            "a later configuration was promoted",
        );
    }

    /// Runs a rollout to its end: every [`TICK`], compares the versions per route and acts.
    async fn drive(
        self: Arc<Self>,
        generation: Arc<Generation>,
        base: Arc<Generation>,
        base0: Vec<ArmStats>,
        mut rollout: Rollout,
    ) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let aborted = tokio::select! {
                _ = every.tick() => false,
                () = self.abort.notified() => true,
            };
            let now = tokio::time::Instant::now();
            let comparison: Vec<(String, ArmStats, ArmStats)> = generation
                .state
                .config
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let canary = generation.state.telemetry.arm(i);
                    let baseline = base
                        .state
                        .route(&r.name)
                        .map(|j| {
                            minus(
                                base.state.telemetry.arm(j),
                                base0.get(i).copied().unwrap_or_default(),
                            )
                        })
                        .unwrap_or_default();
                    (r.name.clone(), canary, baseline)
                })
                .collect();
            if aborted {
                rollout.abort(now);
                self.canary.store(None);
                if let Some(w) = lock(&self.watch).as_mut() {
                    w.rollout = rollout.clone();
                    w.comparison = comparison;
                }
                self.set_outcome(generation.version, "rolled back: aborted by an operator");
                tracing::warn!(
                    version = generation.version,
                    "configuration version {} rolled back: aborted by an operator; version {} serves every request",
                    generation.version,
                    base.version
                );
                return;
            }
            let action = rollout.tick(now, &comparison);
            let canary_requests: u64 = comparison.iter().map(|(_, c, _)| c.requests).sum();
            if let Some(w) = lock(&self.watch).as_mut() {
                w.rollout = rollout.clone();
                w.comparison = comparison;
            }
            match action {
                Action::Hold => {}
                Action::Advance { step, share } => {
                    if let Some(c) = &*self.canary.load() {
                        c.share_ppm.store(ppm(share), Ordering::Relaxed);
                    }
                    tracing::warn!(
                        version = generation.version,
                        "configuration version {}: step {} of {}, {:.1}% of requests",
                        generation.version,
                        step + 1,
                        rollout.settings().steps.len(),
                        share * 100.0
                    );
                }
                Action::Promote => {
                    self.set_outcome(generation.version, "promoted");
                    tracing::warn!(
                        version = generation.version,
                        "configuration version {} promoted: it serves every request",
                        generation.version
                    );
                    self.promote(generation);
                    return;
                }
                Action::RollBack { route, regression } => {
                    self.canary.store(None);
                    let reason = format!("route {route}: {}", regression.describe());
                    self.set_outcome(generation.version, &format!("rolled back: {reason}"));
                    tracing::error!(
                        version = generation.version,
                        "configuration version {} rolled back: {reason}; version {} serves every request",
                        generation.version,
                        base.version
                    );
                    let label = format!(
                        "config v{} ({}, route {route})",
                        generation.version,
                        regression.metric.as_str()
                    );
                    base.state.telemetry.incidents.open(
                        &label,
                        Signal::ConfigRegression,
                        Evidence {
                            signal: Signal::ConfigRegression,
                            observed: regression.canary,
                            baseline: regression.baseline,
                            samples: canary_requests,
                            score: regression.lambda,
                            threshold: regression.threshold,
                            script: None,
                        },
                    );
                    return;
                }
            }
        }
    }

    /// Ends the rollout in progress, the current version serving everything again.
    pub fn abort(&self) -> bool {
        if self.canary.load().is_none() {
            return false;
        }
        self.abort.notify_one();
        true
    }

    /// The rollout in progress or the last one.
    pub fn status_json(&self) -> Value {
        let now = tokio::time::Instant::now();
        let w = lock(&self.watch);
        let Some(w) = w.as_ref() else {
            let v = self.current().version;
            return json!({"state": "idle", "version": v, "serving": v});
        };
        let st = w.rollout.status(now);
        let arm = |a: &ArmStats| {
            json!({
                "requests": a.requests,
                "degraded_ratio": a.degraded_ratio(),
                "latency_ms": (a.latency_n > 0).then(|| a.typical_latency_ms()),
                "defect_ratio": a.defect_ratio(),
            })
        };
        json!({
            "state": st.state,
            "version": w.version,
            "hash": w.hash,
            "summary": w.summary,
            "step": st.step,
            "steps": st.steps,
            "share": st.share,
            "elapsed_ms": st.elapsed_ms,
            "hold_ms": st.hold_ms,
            "route": st.route,
            "reason": st.reason,
            "serving": self.current().version,
            "comparison": w.comparison.iter().map(|(route, c, b)| json!({
                "route": route,
                "canary": arm(c),
                "baseline": arm(b),
            })).collect::<Vec<_>>(),
        })
    }

    /// Every version known: the store's (newest 200), with this process's over them.
    pub async fn versions(&self) -> Vec<VersionRow> {
        let mut rows = match self.state().config.incidents.store.clone() {
            Some(path) => tokio::task::spawn_blocking(move || store::config_versions(&path, 200))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        rows.reverse();
        for mine in lock(&self.versions).iter() {
            match rows.iter_mut().find(|r| r.id == mine.id) {
                Some(r) => *r = mine.clone(),
                None => rows.push(mine.clone()),
            }
        }
        rows.sort_by_key(|r| r.id);
        rows
    }

    fn keep_version(&self, state: &AppState, row: VersionRow) {
        if let Some(s) = state.telemetry.incidents.store() {
            s.save_version(row.clone());
        }
        let mut v = lock(&self.versions);
        if v.len() >= KEEP_VERSIONS {
            v.remove(0);
        }
        v.push(row);
    }

    fn set_outcome(&self, id: u64, outcome: &str) {
        if let Some(s) = self.state().telemetry.incidents.store() {
            s.set_version_outcome(id, outcome);
        }
        if let Some(v) = lock(&self.versions).iter_mut().find(|v| v.id == id) {
            v.outcome = outcome.to_owned();
        }
    }

    /// Takes version `id` again (the one before the serving one when `None`): its configuration as
    /// kept, with the secrets of the configuration serving now (the store never holds them).
    pub async fn rollback(
        self: &Arc<Self>,
        id: Option<u64>,
        force: bool,
    ) -> Result<Value, ApplyError> {
        let versions = self.versions().await;
        let current = self.current();
        let target = match id {
            Some(id) => versions.iter().find(|v| v.id == id),
            None => versions
                .iter()
                .rev()
                .find(|v| v.id < current.version && v.hash != current.hash),
        };
        let Some(v) = target else {
            return Err(ApplyError::Refused {
                message: match id {
                    Some(id) => format!("no configuration version {id} is kept"),
                    None => "no earlier configuration version is kept".to_owned(),
                },
                problems: Vec::new(),
            });
        };
        let mut config =
            diff::parse_redacted(&v.config, &ProcessEnv).map_err(|e| ApplyError::Refused {
                message: format!("version {} no longer reads as a configuration", v.id),
                problems: e.to_string().lines().map(str::to_owned).collect(),
            })?;
        restore_secrets(&mut config, &current.state.config).map_err(|problems| {
            ApplyError::Refused {
                message: format!(
                    "version {} names what the serving configuration has no secret for; apply its file instead",
                    v.id
                ),
                problems,
            }
        })?;
        let source = format!("rollback to version {}", v.id);
        self.take(
            config,
            &source,
            ApplyOptions {
                now: true,
                force,
                probe: Some(false),
            },
        )
        .await
    }
}

/// The share as requests per million.
fn ppm(share: f64) -> u32 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a share in [0, 1] scaled to a million"
    )]
    let n = (share.clamp(0.0, 1.0) * 1_000_000.0).round() as u32;
    n
}

/// `a` less what `b` had counted (the baseline from a rollout's start).
fn minus(a: ArmStats, b: ArmStats) -> ArmStats {
    ArmStats {
        requests: a.requests.saturating_sub(b.requests),
        degraded: a.degraded.saturating_sub(b.degraded),
        latency_n: a.latency_n.saturating_sub(b.latency_n),
        log_latency_sum: a.log_latency_sum - b.log_latency_sum,
        log_latency_sq_sum: a.log_latency_sq_sum - b.log_latency_sq_sum,
        answers: a.answers.saturating_sub(b.answers),
        defective: a.defective.saturating_sub(b.defective),
    }
}

/// What a new configuration changes that only a restart takes (the listener, the upstream
/// client's connect timeout, the store, where metrics and traces go, the alert sinks: process-wide
/// parts built once).
fn restart_only(old: &Config, new: &Config) -> Vec<String> {
    let mut w = Vec::new();
    let mut note = |changed: bool, what: &str| {
        if changed {
            w.push(format!(
                "{what} changed: it takes effect at the next restart"
            ));
        }
    };
    note(old.server.listen != new.server.listen, "server.listen");
    note(
        old.server.connect_timeout != new.server.connect_timeout,
        "server.connect_timeout",
    );
    note(
        old.incidents.store != new.incidents.store,
        "incidents.store",
    );
    note(
        old.telemetry.metrics_listen != new.telemetry.metrics_listen,
        "telemetry.metrics_listen",
    );
    note(
        old.telemetry.otlp_endpoint != new.telemetry.otlp_endpoint,
        "telemetry.otlp_endpoint",
    );
    note(old.alerts.len() != new.alerts.len(), "alerts");
    w
}

/// Gives `config` (read back from a kept, redacted version) the secrets of `current`: each
/// provider's key and header values by provider name, the gateway and admin keys, the alert sinks.
fn restore_secrets(config: &mut Config, current: &Config) -> Result<(), Vec<String>> {
    let mut missing = Vec::new();
    for p in &mut config.providers {
        match current.providers.iter().find(|c| c.name == p.name) {
            Some(c) => {
                p.api_key = c.api_key.clone();
                for (name, value) in &mut p.headers {
                    if let Some((_, v)) = c.headers.iter().find(|(n, _)| n == name) {
                        *value = v.clone();
                    }
                }
            }
            None if p.api_key.is_some() => {
                missing.push(format!("provider {}: its key", p.name));
            }
            None => {}
        }
    }
    config.auth.gateway_keys = current.auth.gateway_keys.clone();
    config.admin.key = current.admin.key.clone();
    config.alerts = current.alerts.clone();
    config.telemetry.otlp_headers = current.telemetry.otlp_headers.clone();
    config.telemetry.otlp_endpoint = current.telemetry.otlp_endpoint.clone();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

/// Routes each request through the generation the [`Gateway`] picks for it.
#[derive(Clone)]
pub struct GatewayService(Arc<Gateway>);

impl tower::Service<http::Request<Body>> for GatewayService {
    type Response = Response;
    type Error = Infallible;
    type Future = tower::util::Oneshot<Router, http::Request<Body>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.0.router_for(req.uri().path()).oneshot(req)
    }
}

// ---------------------------------------------------------------------------------------------
// The admin API

fn gateway_of(st: &AppState) -> Option<Arc<Gateway>> {
    st.gateway.get().and_then(Weak::upgrade)
}

fn not_serving() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": {"message": "this gateway takes no configuration changes (it is not serving)"}})),
    )
        .into_response()
}

fn flag(q: &std::collections::HashMap<String, String>, name: &str) -> Option<bool> {
    q.get(name)
        .map(|v| matches!(v.as_str(), "" | "1" | "true" | "yes"))
}

/// `POST /admin/config` (the new configuration's TOML as the body; `?now`, `?force`,
/// `?probe=false`).
pub async fn apply_handler(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = crate::admin::refuse(&st, &headers) {
        return r;
    }
    let Some(gw) = gateway_of(&st) else {
        return not_serving();
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return ApplyError::Refused {
            message: "the body must be the configuration as UTF-8 TOML".to_owned(),
            problems: Vec::new(),
        }
        .into_response();
    };
    let opts = ApplyOptions {
        now: flag(&q, "now").unwrap_or(false),
        force: flag(&q, "force").unwrap_or(false),
        probe: flag(&q, "probe"),
    };
    let source = if opts.now {
        "POST /admin/config (--now)"
    } else {
        "POST /admin/config"
    };
    match gw.apply(text, source, opts).await {
        Ok(v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /admin/config/rollback` (`{"version": N}`, or none: the version before the serving one).
pub async fn rollback_handler(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = crate::admin::refuse(&st, &headers) {
        return r;
    }
    let Some(gw) = gateway_of(&st) else {
        return not_serving();
    };
    let version = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => v.get("version").and_then(Value::as_u64),
            Err(e) => {
                return ApplyError::Refused {
                    message: format!("the body must be JSON like {{\"version\": 3}}: {e}"),
                    problems: Vec::new(),
                }
                .into_response();
            }
        }
    };
    match gw
        .rollback(version, flag(&q, "force").unwrap_or(false))
        .await
    {
        Ok(v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /admin/rollout`.
pub async fn status_handler(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = crate::admin::refuse(&st, &headers) {
        return r;
    }
    match gateway_of(&st) {
        Some(gw) => Json(gw.status_json()).into_response(),
        None => not_serving(),
    }
}

/// `POST /admin/rollout/abort`.
pub async fn abort_handler(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = crate::admin::refuse(&st, &headers) {
        return r;
    }
    let Some(gw) = gateway_of(&st) else {
        return not_serving();
    };
    if !gw.abort() {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": {"message": "no rollout is running"}})),
        )
            .into_response();
    }
    // The driver acts at once; give it a moment so the answer shows the outcome.
    for _ in 0..20 {
        if gw.canary.load().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Json(gw.status_json()).into_response()
}
