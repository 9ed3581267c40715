//! The `master` command line: `serve`, `submit`, `status` and `best`. Client commands talk to a
//! running master over the admin service.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::artifacts::ArtifactLocation;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use explore_common::client::{
    admin_client, connect_with, read_token, status_text, AuthChannel, BearerToken, TlsOptions,
};
use explore_common::proto::admin_service_client::AdminServiceClient;
use explore_common::proto::{self, ExperimentSummary, TrialRecord};
use explore_common::spec::{ExperimentSpec, SeedModel};
use explore_common::CommonError;

use crate::auth::token_path;
use crate::scheduler::SchedulerConfig;
use crate::server::{ServeConfig, TlsConfig};

/// explore master: the history model pool and the simulated-annealing scheduler.
#[derive(Debug, Parser)]
#[command(name = "master", version, about)]
pub struct Cli {
    /// Log lines on stderr: text (coloured only on a terminal, never with NO_COLOR) or json
    /// (one object per line, fields at the top level).
    #[arg(
        long,
        global = true,
        env = explore_common::logging::LOG_FORMAT_ENV,
        value_name = "FORMAT",
        default_value = "text",
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(explore_common::logging::LOG_FORMAT_NAMES),
            |s| s.parse::<explore_common::logging::LogFormat>().unwrap_or_default()
        )
    )]
    pub log_format: explore_common::logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the master (gRPC on --listen, pool in --data-dir).
    Serve(ServeArgs),
    /// Submit an experiment spec (TOML); --watch follows it to the end.
    Submit(SubmitArgs),
    /// Show experiments, or one experiment's leaderboard.
    Status(StatusArgs),
    /// Show the best model of an experiment; --export writes it to a directory.
    Best(BestArgs),
    /// List every trial of an experiment (--output json: one JSON object per line).
    Trials(TrialsArgs),
    /// Stop an experiment: no new trials; running ones finish (--now: cancelled).
    Stop(StopArgs),
    /// Resume a stopped experiment.
    Resume(ResumeArgs),
    /// Write a trial (default: the best) as TorchScript, weights, JSON and a model card.
    Export(crate::export::ExportArgs),
    /// Benchmarks only: submit a spec into a stopped master's pool and add N completed trials.
    /// The experiment's trial budget becomes N + 10,000,000, whatever the spec says: it is a
    /// load generator's experiment, not one to run to its end.
    #[command(name = "dev-prefill", hide = true)]
    DevPrefill(PrefillArgs),
}

/// Flags of `master dev-prefill`.
#[derive(Debug, Args)]
pub struct PrefillArgs {
    /// The experiment spec (TOML).
    pub spec: PathBuf,
    /// Directory of the pool (the master must not be running on it).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The pool: `sqlite` (the file in --data-dir) or a PostgreSQL URL.
    #[arg(long, default_value = "sqlite", value_name = "sqlite|URL")]
    pub db: String,
    /// Completed trials to add.
    #[arg(long)]
    pub trials: u64,
}

/// `master dev-prefill`: prints the experiment id.
pub async fn prefill(args: &PrefillArgs) -> Result<()> {
    let spec = ExperimentSpec::from_toml(&prepare_spec(&args.spec)?)?;
    let id = crate::prefill::prefill(&args.data_dir, &args.db, spec, args.trials).await?;
    println!("{id}");
    Ok(())
}

/// Flags of `master serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Directory for the database, the cluster token and (unless --artifacts says otherwise)
    /// checkpoints.
    #[arg(long, env = "EXPLORE_DATA_DIR", default_value = ".explore")]
    pub data_dir: PathBuf,
    /// Where the pool lives: `sqlite` (embedded, a file in --data-dir) or a PostgreSQL URL
    /// (`postgres://user:password@host:5432/db`), which several masters may share.
    #[arg(
        long,
        env = "EXPLORE_DB",
        default_value = "sqlite",
        value_name = "sqlite|URL"
    )]
    pub db: String,
    /// Seconds a trial lease lasts without a heartbeat.
    #[arg(long, default_value_t = 60)]
    pub lease_secs: u64,
    /// Seconds between worker heartbeats.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Times a trial is re-leased after its lease expired before it fails.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Largest checkpoint accepted, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub max_checkpoint_mib: u64,
    /// Serve over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Also serve HTTP here: the dashboard at /, its JSON API, /metrics, /healthz and /readyz
    /// (e.g. 127.0.0.1:8080; port 0 picks a free one). Without it, no HTTP port is opened.
    #[arg(long, value_name = "ADDR", env = "EXPLORE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Read the cluster token from this file (e.g. a mounted Kubernetes Secret) instead of
    /// <data-dir>/token, which is then neither read nor created.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Where checkpoints live: a directory (default <data-dir>/artifacts; a volume every master
    /// mounts when several run) or object storage: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix`, configured by the provider's usual environment variables
    /// (AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT, …).
    #[arg(long, env = "EXPLORE_ARTIFACTS", value_name = "DIR|URL")]
    pub artifacts: Option<String>,
}

impl TryFrom<&ServeArgs> for ServeConfig {
    type Error = anyhow::Error;

    fn try_from(a: &ServeArgs) -> Result<Self> {
        if a.heartbeat_secs == 0 || a.lease_secs < 2 * a.heartbeat_secs {
            bail!("--lease-secs must be at least twice --heartbeat-secs (and heartbeats must be positive)");
        }
        if a.max_attempts == 0 {
            bail!("--max-attempts must be at least 1");
        }
        Ok(ServeConfig {
            listen: a.listen,
            data_dir: a.data_dir.clone(),
            db: a.db.clone(),
            scheduler: SchedulerConfig {
                lease: Duration::from_secs(a.lease_secs),
                heartbeat_interval: Duration::from_secs(a.heartbeat_secs),
                max_attempts: a.max_attempts,
            },
            max_checkpoint_bytes: a.max_checkpoint_mib << 20,
            tls: match (&a.tls_cert, &a.tls_key) {
                (Some(cert), Some(key)) => Some(TlsConfig {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: a.tls_client_ca.clone(),
                }),
                _ => None,
            },
            http_listen: a.http_listen,
            token_file: a.token_file.clone(),
            artifacts: a
                .artifacts
                .as_deref()
                .map(ArtifactLocation::parse)
                .transpose()?,
            ..ServeConfig::default()
        })
    }
}

/// How a client command reaches the master.
#[derive(Debug, Args, Clone)]
pub struct ConnectArgs {
    /// URL of the master.
    #[arg(long, env = "EXPLORE_MASTER", default_value = "http://127.0.0.1:50051")]
    pub master: String,
    /// File holding the cluster token (default: $EXPLORE_TOKEN, else <data-dir>/token).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The master's data directory, where the token is found when the master runs locally.
    #[arg(long, env = "EXPLORE_DATA_DIR", default_value = ".explore")]
    pub data_dir: PathBuf,
    /// CA (PEM) that signed the master's certificate, for an https:// master [default: the
    /// system's roots].
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a master that requires one; needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ConnectArgs {
    /// An authenticated admin client.
    pub async fn admin(&self) -> Result<AdminServiceClient<AuthChannel>> {
        let token = read_token(
            self.token_file.as_deref(),
            Some(&token_path(&self.data_dir)),
        )?;
        let token = BearerToken::new(&token)?;
        let tls = TlsOptions {
            ca: self.tls_ca.clone(),
            identity: self.tls_cert.clone().zip(self.tls_key.clone()),
        };
        // Certificate files and the URL are checked first: their errors need no hint that the
        // master may be down.
        tls.check(&self.master)?;
        let channel = match connect_with(&self.master, &tls).await {
            Ok(channel) => channel,
            // A tls error already says what is wrong with the certificates or the handshake.
            Err(e @ CommonError::Tls(_)) => return Err(e.into()),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("is `master serve` running at {}?", self.master)))
            }
        };
        Ok(admin_client(channel, &token))
    }
}

/// Flags of `master submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The experiment spec (TOML).
    pub spec: PathBuf,
    /// Follow the experiment with a progress bar until it ends, then print the leaderboard.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `master status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// An experiment id: show its leaderboard. Without it, list all experiments.
    pub experiment: Option<String>,
    /// Rows of the leaderboard.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `master trials`.
#[derive(Debug, Args)]
pub struct TrialsArgs {
    /// An experiment id (default: the most recent experiment).
    pub experiment: Option<String>,
    /// One JSON object per trial and line, for scripts: the same as --output json.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
    /// Show at most N trials (default: every trial, fetched page by page); a hint on stderr
    /// gives the --after of the next ones
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Start after the trial with this seq (probes have negative seqs and come first)
    #[arg(long, value_name = "SEQ", allow_negative_numbers = true)]
    pub after: Option<i64>,
    /// Only trials with this status (queued, leased, running, completed, pruned, failed,
    /// cancelled)
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Trials per `ListTrialsPage` call of `master trials`.
const TRIALS_PAGE: u32 = 1000;

/// Flags of `master stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// The experiment id.
    pub experiment: String,
    /// Cancel the trials workers are training now instead of letting them finish.
    #[arg(long)]
    pub now: bool,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `master resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The experiment id.
    pub experiment: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `master stop`: prints what the stop cancelled (queued trials; with `--now`, the trials in
/// flight, by id) or leaves to finish, and how to resume.
pub async fn stop(args: &StopArgs) -> Result<()> {
    let mut client = args.connect.admin().await?;
    let answer = client
        .stop_experiment(proto::StopExperimentRequest {
            experiment_id: args.experiment.clone(),
            now: args.now,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.output.json() {
        println!("{}", crate::output::stop_json(&answer));
        return Ok(());
    }
    let summary = answer.experiment.clone().unwrap_or_default();
    let id = if summary.experiment_id.is_empty() {
        args.experiment.as_str()
    } else {
        summary.experiment_id.as_str()
    };
    println!("stopped {id} ({}): nothing new starts", summary.name);
    let list = |ids: &[String]| {
        if ids.is_empty() {
            String::new()
        } else {
            format!(": {}", ids.join(", "))
        }
    };
    println!(
        "cancelled {} queued trial(s) that had not started{}",
        answer.cancelled_queued,
        list(&answer.cancelled_queued_ids)
    );
    if args.now {
        println!(
            "cancelled {} trial(s) in flight{}",
            answer.cancelled_held,
            list(&answer.cancelled_held_ids)
        );
    } else {
        println!(
            "{} trial(s) in flight will finish{}",
            answer.finishing,
            list(&answer.finishing_ids)
        );
    }
    println!("resume it with: master resume {id}");
    Ok(())
}

/// `master resume`.
pub async fn resume(args: &ResumeArgs) -> Result<()> {
    let mut client = args.connect.admin().await?;
    let summary = client
        .resume_experiment(proto::ResumeExperimentRequest {
            experiment_id: args.experiment.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "resumed {} ({}): {} of {} trials finished",
        summary.experiment_id,
        summary.name,
        summary.trials_completed + summary.trials_pruned,
        summary.max_trials
    );
    Ok(())
}

/// Flags of `master best`.
#[derive(Debug, Args)]
pub struct BestArgs {
    /// An experiment id (default: the most recent experiment).
    pub experiment: Option<String>,
    /// Write genome.json, hparams.json, weights.safetensors, data.toml, model.json and
    /// MODEL_CARD.md here (`master export` also writes TorchScript).
    #[arg(long)]
    pub export: Option<PathBuf>,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Reads a spec file, validates it, and inlines genome files so the master needs no access to
/// the submitter's files.
pub fn prepare_spec(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read spec {}", path.display()))?;
    // Parsed without validation first: validating resolves genome files against the current
    // directory, not against the spec's.
    let mut spec: ExperimentSpec =
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let seeds = spec
        .resolve_seeds(Some(base))
        .with_context(|| format!("in {}", path.display()))?;
    let inline = spec.seeds.iter().any(|s| s.genome_file.is_some());
    if inline {
        // Presets stay presets (the master knows them, and their name labels the seed trials).
        spec.seeds = spec
            .seeds
            .iter()
            .zip(seeds)
            .map(|(given, s)| SeedModel {
                preset: given.preset.clone(),
                genome_file: None,
                genome: given.preset.is_none().then_some(s.genome),
                hparams: Some(s.hparams),
                transfer: given.transfer.clone(),
            })
            .collect();
    }
    spec.validate()
        .and_then(|()| spec.check_replaced_keys(&text))
        .with_context(|| format!("in {}", path.display()))?;
    if inline {
        return spec.to_toml().context("cannot re-encode the spec");
    }
    Ok(text)
}

/// `master submit`.
pub async fn submit(args: &SubmitArgs) -> Result<()> {
    let spec_toml = prepare_spec(&args.spec)?;
    let mut client = args.connect.admin().await?;
    let id = client
        .submit_experiment(proto::SubmitExperimentRequest { spec_toml })
        .await
        .map_err(status_error)?
        .into_inner()
        .experiment_id;
    println!("submitted experiment {id}");
    if args.watch {
        let summary = watch(&mut client, &id).await?;
        print_leaderboard(&mut client, &id, 10).await?;
        if summary.status == "failed" {
            bail!("experiment {id} failed: {}", summary.status_reason);
        }
    }
    Ok(())
}

/// Shows a progress bar until the experiment ends; returns its final summary.
pub async fn watch(
    client: &mut AdminServiceClient<AuthChannel>,
    id: &str,
) -> Result<ExperimentSummary> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {prefix}  {msg}",
        )
        .expect("valid template"),
    );
    let mut failures = 0;
    let mut last_printed = None;
    loop {
        let summary = match client
            .get_experiment(proto::GetExperimentRequest {
                experiment_id: id.to_string(),
            })
            .await
        {
            Ok(r) => {
                failures = 0;
                r.into_inner()
            }
            Err(status) if status.code() == tonic::Code::Unavailable && failures < 30 => {
                failures += 1;
                bar.set_message("master unreachable, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(status) => return Err(status_error(status)),
        };
        // The bar follows the epoch budget when there is one (it measures compute better than
        // a trial count); the message shows both budgets, the best score, the running trials
        // and the ETA from the rate so far (`output::watch_line`).
        let (unit, done, total) = crate::output::budget_progress(&summary);
        bar.set_prefix(unit);
        bar.set_length(total);
        bar.set_position(done.min(total));
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let message = crate::output::watch_line(&summary, now_ms);
        // Without a terminal (logs, CI) the bar is hidden: print a line whenever a trial ends.
        let seen = (
            summary.trials_completed + summary.trials_pruned,
            summary.trials_failed,
        );
        if bar.is_hidden() && last_printed != Some(seen) {
            println!("{message}");
            last_printed = Some(seen);
        }
        bar.set_message(message);
        if summary.status != "running" {
            bar.finish();
            println!(
                "experiment {id} {}: {}",
                summary.status, summary.status_reason
            );
            return Ok(summary);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `master status`.
pub async fn status(args: &StatusArgs) -> Result<()> {
    let mut client = args.connect.admin().await?;
    match &args.experiment {
        Some(id) => {
            let s = client
                .get_experiment(proto::GetExperimentRequest {
                    experiment_id: id.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if args.output.json() {
                let board = leaderboard(&mut client, id, args.top).await?;
                println!("{}", crate::output::status_json(&s, &board));
                return Ok(());
            }
            print_summary_header();
            print_summary(&s);
            // Why it ended, or what it is doing (e.g. the `[final]` phase's progress).
            if !s.status_reason.is_empty() {
                println!("{}", s.status_reason);
            }
            println!();
            print_leaderboard(&mut client, id, args.top).await
        }
        None => {
            let list = client
                .list_experiments(proto::ListExperimentsRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .experiments;
            if args.output.json() {
                println!("{}", crate::output::experiments_json(&list));
                return Ok(());
            }
            if list.is_empty() {
                println!("no experiments yet: submit one with `master submit SPEC`");
                return Ok(());
            }
            print_summary_header();
            for s in &list {
                print_summary(s);
            }
            Ok(())
        }
    }
}

fn print_summary_header() {
    println!(
        "{:<22} {:<20} {:<10} {:>9} {:>7} {:>7} {:>9} {:>8} {:>9}",
        "EXPERIMENT", "NAME", "STATUS", "TRIALS", "PRUNED", "FAILED", "EPOCHS", "BEST", "TEMP"
    );
}

fn print_summary(s: &ExperimentSummary) {
    let best = if s.best_score.is_nan() {
        "-".into()
    } else {
        format!("{:.4}", s.best_score)
    };
    let epochs = match s.max_epochs {
        0 => s.epochs_spent.to_string(),
        max => format!("{}/{max}", s.epochs_spent),
    };
    println!(
        "{:<22} {:<20} {:<10} {:>9} {:>7} {:>7} {:>9} {:>8} {:>9.5}",
        s.experiment_id,
        truncate(&s.name, 20),
        s.status,
        format!("{}/{}", s.trials_completed + s.trials_pruned, s.max_trials),
        s.trials_pruned,
        s.trials_failed,
        epochs,
        best,
        s.temperature
    );
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}

/// The best `top` completed trials of an experiment, best first (ties: lower seq first).
pub async fn leaderboard(
    client: &mut AdminServiceClient<AuthChannel>,
    id: &str,
    top: usize,
) -> Result<Vec<TrialRecord>> {
    let mut trials = client
        .list_trials(proto::ListTrialsRequest {
            experiment_id: id.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .trials;
    trials.retain(|t| t.status == "completed");
    trials.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.seq.cmp(&b.seq)));
    trials.truncate(top);
    Ok(trials)
}

/// Prints the best `top` completed trials of an experiment.
pub async fn print_leaderboard(
    client: &mut AdminServiceClient<AuthChannel>,
    id: &str,
    top: usize,
) -> Result<()> {
    let trials = leaderboard(client, id, top).await?;
    println!("leaderboard of {id} (score = validation accuracy; test accuracy for reporting only)");
    println!(
        "{:>4} {:<24} {:>5} {:>8} {:>8} {:>9} {:>10} {:>4}  ORIGIN",
        "RANK", "TRIAL", "SEQ", "VAL", "TEST", "PARAMS", "MFLOPS", "ACC"
    );
    for (rank, t) in trials.iter().enumerate() {
        let test = t
            .metrics
            .get("test_accuracy")
            .map(|v| format!("{v:.4}"))
            .unwrap_or("-".into());
        println!(
            "{:>4} {:<24} {:>5} {:>8.4} {:>8} {:>9} {:>10.2} {:>4}  {}",
            rank + 1,
            t.trial_id,
            t.seq,
            t.score,
            test,
            t.params,
            t.flops as f64 / 1e6,
            if t.accepted { "yes" } else { "no" },
            truncate(&t.origin, 60)
        );
    }
    Ok(())
}

/// The named experiment, or the most recent one.
async fn experiment_or_latest(
    client: &mut AdminServiceClient<AuthChannel>,
    experiment: &Option<String>,
) -> Result<String> {
    match experiment {
        Some(id) => Ok(id.clone()),
        None => client
            .list_experiments(proto::ListExperimentsRequest {})
            .await
            .map_err(status_error)?
            .into_inner()
            .experiments
            .first()
            .map(|e| e.experiment_id.clone())
            .context("no experiments yet"),
    }
}

/// `master trials`: the trials in proposal order (every one, or `--limit` of them from
/// `--after`), as a table or as JSON lines; fetched with `ListTrialsPage`, page by page.
pub async fn trials(args: &TrialsArgs) -> Result<()> {
    let mut client = args.connect.admin().await?;
    let id = experiment_or_latest(&mut client, &args.experiment).await?;
    let mut trials = Vec::new();
    let mut page_token = args.after.map(|s| s.to_string()).unwrap_or_default();
    let mut more = false;
    loop {
        let want = args.limit.map_or(TRIALS_PAGE, |l| {
            (l as usize - trials.len()).min(TRIALS_PAGE as usize) as u32
        });
        if want == 0 {
            break;
        }
        let page = client
            .list_trials_page(proto::ListTrialsPageRequest {
                experiment_id: id.clone(),
                page_size: want,
                page_token,
                status: args.status.clone().unwrap_or_default(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        trials.extend(page.trials);
        page_token = page.next_page_token;
        more = !page_token.is_empty();
        if !more {
            break;
        }
    }
    if more {
        eprintln!("more trials: add --after {page_token}");
    }
    if args.json || args.output.json() {
        for t in &trials {
            println!("{}", trial_json(t));
        }
        return Ok(());
    }
    for line in trials_table(&trials) {
        println!("{line}");
    }
    Ok(())
}

/// Widest `name=value,...` cell of the METRICS column.
const METRICS_CELL: usize = 60;

/// The `master trials` table, header first. A METRICS column (the last epoch's named metrics
/// as `name=value,...`; a probe's scores without their `probe.` prefix) appears only when some
/// trial has any; a PREDICTED column (the transfer predictor's `mean±std`) only when some trial
/// has a prediction. Probes are numbered `p1`, `p2`, ….
fn trials_table(trials: &[TrialRecord]) -> Vec<String> {
    let is_probe = |t: &TrialRecord| t.kind == proto::TrialKind::Probe as i32;
    let cells: Vec<String> = trials
        .iter()
        .map(|t| {
            let cell = if is_probe(t) {
                let scores = t
                    .metrics
                    .iter()
                    .filter_map(|(k, v)| k.strip_prefix("probe.").map(|k| (k.to_string(), *v)))
                    .collect();
                metrics_cell(&scores)
            } else {
                metrics_cell(&t.epoch_metrics)
            };
            truncate(&cell, METRICS_CELL)
        })
        .collect();
    let predicted: Vec<String> = trials
        .iter()
        .map(|t| {
            if t.predicted_score.is_finite() {
                format!("{:.3}±{:.3}", t.predicted_score, t.predicted_std)
            } else {
                String::new()
            }
        })
        .collect();
    let predicted_width = predicted
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0);
    let prediction = |cell: &str| {
        if predicted_width == 0 {
            String::new()
        } else {
            format!(" {cell:>predicted_width$}")
        }
    };
    let width = cells.iter().map(|c| c.chars().count()).max().unwrap_or(0);
    let metrics = |cell: &str| {
        if width == 0 {
            String::new()
        } else {
            format!(" {cell:<width$}")
        }
    };
    let mut lines = vec![format!(
        "{:>4} {:<24} {:<10} {:>5} {:>6} {:>8} {:>8}{} {:>3}{}  ORIGIN",
        "SEQ",
        "TRIAL",
        "STATUS",
        "CHAIN",
        "EPOCHS",
        "VAL",
        "TEST",
        prediction("PREDICTED"),
        "INH",
        metrics("METRICS")
    )];
    for ((t, cell), predicted) in trials.iter().zip(&cells).zip(&predicted) {
        let value = |v: Option<f64>| {
            v.filter(|v| v.is_finite())
                .map_or("-".into(), |v| format!("{v:.4}"))
        };
        let probe = is_probe(t);
        lines.push(format!(
            "{:>4} {:<24} {:<10} {:>5} {:>6} {:>8} {:>8}{} {:>3}{}  {}",
            if probe {
                format!("p{}", t.seq)
            } else {
                t.seq.to_string()
            },
            t.trial_id,
            t.status,
            if probe {
                "-".into()
            } else {
                t.chain.to_string()
            },
            t.epochs_run,
            value(if probe { None } else { Some(t.score) }),
            value(t.metrics.get("test_accuracy").copied()),
            prediction(predicted),
            if t.inherit_from.is_empty() || probe {
                ""
            } else {
                "yes"
            },
            metrics(if cell.is_empty() { "-" } else { cell }),
            truncate(
                if t.error.is_empty() {
                    &t.origin
                } else {
                    &t.error
                },
                70
            )
        ));
    }
    lines
}

/// Named metrics as `name=value,...` in name order; empty for none.
fn metrics_cell(metrics: &std::collections::HashMap<String, f64>) -> String {
    let sorted: BTreeMap<&String, &f64> = metrics.iter().collect();
    sorted
        .into_iter()
        .map(|(name, v)| format!("{name}={}", compact_number(*v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A number in few characters: up to four decimals without trailing zeros, or scientific
/// notation for very small and very large magnitudes.
fn compact_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    if (1e-3..1e6).contains(&v.abs()) {
        let fixed = format!("{v:.4}");
        fixed
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// A trial as one JSON object (absent scores are `null`): a line of `master trials --output
/// json`, and the TRIAL of the other read commands' JSON (see [`crate::output`]).
pub fn trial_json(t: &TrialRecord) -> serde_json::Value {
    let finite = |v: f64| v.is_finite().then_some(v);
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    serde_json::json!({
        "trial_id": t.trial_id,
        "seq": t.seq,
        "kind": if t.kind == proto::TrialKind::Probe as i32 { "probe" } else { "train" },
        "status": t.status,
        "parent_trial_id": text(&t.parent_trial_id),
        "origin": t.origin,
        // "search" or "final" (a trial of the `[final]` phase); null from an older master.
        "phase": text(&t.phase),
        "chain": t.chain,
        "inherited": !t.inherit_from.is_empty(),
        "epochs_run": t.epochs_run,
        "score": finite(t.score),
        "test_accuracy": t.metrics.get("test_accuracy").copied().and_then(finite),
        "inherited_tensors": t.metrics.get("inherited_tensors"),
        // The last epoch's named metrics (objective-specific, e.g. "elr.norm_drift"), by name.
        "epoch_metrics": t.epoch_metrics.iter().collect::<BTreeMap<_, _>>(),
        "accepted": t.accepted,
        // The transfer predictor's fine-tuned validation accuracy and its standard deviation.
        "predicted_score": finite(t.predicted_score),
        "predicted_std": finite(t.predicted_std),
        // Every metric of the result (a probe's scores are "probe.*").
        "metrics": t.metrics.iter().collect::<BTreeMap<_, _>>(),
        "temperature": finite(t.temperature),
        "params": t.params,
        "flops": t.flops,
        "genome": serde_json::from_str::<serde_json::Value>(&t.genome_json).ok(),
        "hparams": serde_json::from_str::<serde_json::Value>(&t.hparams_json).ok(),
        "created_at_ms": t.created_at_ms,
        "finished_at_ms": (t.finished_at_ms > 0).then_some(t.finished_at_ms),
        "error": text(&t.error),
    })
}

/// `master best`.
pub async fn best(args: &BestArgs) -> Result<()> {
    let mut client = args.connect.admin().await?;
    let id = experiment_or_latest(&mut client, &args.experiment).await?;
    let best = client
        .get_best_model(proto::GetBestModelRequest {
            experiment_id: id.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.output.json() {
        if let Some(dir) = &args.export {
            crate::export::write_model(&mut client, &best, dir).await?;
        }
        println!(
            "{}",
            crate::output::best_json(&best, args.export.as_deref())
        );
        return Ok(());
    }
    print_best(&best);
    if let Some(dir) = &args.export {
        crate::export::write_model(&mut client, &best, dir).await?;
        println!("exported to {}", dir.display());
    }
    Ok(())
}

fn print_best(t: &TrialRecord) {
    println!(
        "best model of {}: trial {} (seq {})",
        t.experiment_id, t.trial_id, t.seq
    );
    println!("  validation accuracy {:.4}", t.score);
    if let Some(test) = t.metrics.get("test_accuracy") {
        println!("  test accuracy       {test:.4}");
    }
    println!(
        "  parameters {}  MFLOPs {:.2}",
        t.params,
        t.flops as f64 / 1e6
    );
    println!("  origin: {}", t.origin);
    println!("  hyperparameters: {}", t.hparams_json);
}

/// Turns a gRPC status into a readable error.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        // Only transport failures (a refused TLS handshake, a closed connection) have a cause.
        _ if status.source().is_some() => {
            anyhow::anyhow!("master unreachable: {}", status_text(&status))
        }
        tonic::Code::Unavailable => anyhow::anyhow!("master unreachable: {}", status.message()),
        tonic::Code::Unauthenticated => anyhow::anyhow!(
            "{} (is the token from this master's data directory?)",
            status.message()
        ),
        _ => anyhow::anyhow!("{}", status.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u32, epoch_metrics: &[(&str, f64)]) -> TrialRecord {
        TrialRecord {
            trial_id: format!("trial-{seq:016}"),
            seq,
            status: "running".into(),
            origin: "seed cnn2".into(),
            score: f64::NAN,
            predicted_score: f64::NAN,
            predicted_std: f64::NAN,
            epoch_metrics: epoch_metrics
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            ..Default::default()
        }
    }

    /// Regression: an ELR spec whose seed is a genome file was re-encoded with the default
    /// `search.learning_rate` and `search.weight_decay`, which the master then refused as keys
    /// that ELR mode replaces.
    #[test]
    fn an_elr_spec_with_a_genome_file_seed_is_inlined_into_a_spec_the_master_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let genome = explore_common::presets::preset("cnn2").unwrap();
        std::fs::write(dir.path().join("net.json"), genome.canonical_json()).unwrap();
        let elr = "name = \"x\"\n[budget]\nmax_trials = 3\n[training]\nobjective = \"elr\"\n";
        let path = dir.path().join("spec.toml");
        std::fs::write(
            &path,
            format!("{elr}[search]\nelr = [0.01, 0.1]\n[[seeds]]\ngenome_file = \"net.json\"\n"),
        )
        .unwrap();
        let inlined = prepare_spec(&path).unwrap();
        let spec = ExperimentSpec::from_toml(&inlined).unwrap();
        assert_eq!(spec.seeds[0].genome.as_ref(), Some(&genome));
        // a replaced key the user did write is still refused, before anything is sent
        std::fs::write(
            &path,
            format!("{elr}[search]\nlearning_rate = [0.001, 0.01]\n[[seeds]]\ngenome_file = \"net.json\"\n"),
        )
        .unwrap();
        let err = format!("{:#}", prepare_spec(&path).unwrap_err());
        assert!(err.contains("search.learning_rate"), "{err}");
    }

    #[test]
    fn the_json_line_carries_the_last_epoch_metrics_by_name() {
        let t = record(0, &[("elr.norm_drift", 0.0125), ("a.b", 2.0)]);
        let json = trial_json(&t);
        assert_eq!(
            json["epoch_metrics"],
            serde_json::json!({"a.b": 2.0, "elr.norm_drift": 0.0125})
        );
        assert_eq!(
            trial_json(&record(1, &[]))["epoch_metrics"],
            serde_json::json!({})
        );
    }

    #[test]
    fn the_table_has_a_metrics_column_only_when_a_trial_has_metrics() {
        let plain = trials_table(&[record(0, &[]), record(1, &[])]);
        assert!(!plain[0].contains("METRICS"), "{plain:?}");
        let table = trials_table(&[
            record(0, &[]),
            record(1, &[("elr.norm_drift", 0.000012), ("z", 12.5)]),
        ]);
        assert!(table[0].contains("METRICS"), "{table:?}");
        assert!(
            table[2].contains(" elr.norm_drift=1.200e-5,z=12.5 "),
            "{table:?}"
        );
        // The column is padded, so ORIGIN stays aligned; a trial without metrics shows "-".
        let origin = |line: &str| line.rfind("seed cnn2").unwrap();
        assert_eq!(origin(&table[1]), origin(&table[2]));
        assert!(table[1].contains(" - "), "{table:?}");
    }

    #[test]
    fn probes_show_their_scores_and_fine_tunes_their_prediction() {
        let probe = TrialRecord {
            kind: proto::TrialKind::Probe as i32,
            seq: 1,
            score: 0.37,
            origin: "probe of transfer src#4 (source val 0.9012)".into(),
            metrics: [
                ("probe.logme".to_string(), 0.5612),
                ("probe.latency_ms".to_string(), 0.41),
            ]
            .into(),
            inherit_from: "ab".repeat(32),
            ..record(1, &[])
        };
        let fine_tune = TrialRecord {
            score: 0.84,
            predicted_score: 0.8213,
            predicted_std: 0.0301,
            inherit_from: "ab".repeat(32),
            ..record(0, &[])
        };
        let table = trials_table(&[probe, fine_tune]);
        assert!(table[0].contains("PREDICTED"), "{table:?}");
        // a probe is numbered p1, has no chain, no validation score and no inheritance mark;
        // its scores fill the metrics column without their prefix
        assert!(table[1].trim_start().starts_with("p1 "), "{table:?}");
        assert!(
            table[1].contains("latency_ms=0.41,logme=0.5612"),
            "{table:?}"
        );
        assert!(
            !table[1].contains("0.3700") && !table[1].contains("yes"),
            "{table:?}"
        );
        assert!(table[2].contains("0.821±0.030"), "{table:?}");
        assert!(
            table[2].contains("0.8400") && table[2].contains("yes"),
            "{table:?}"
        );
        // without a prediction anywhere there is no PREDICTED column
        let plain = trials_table(&[record(0, &[])]);
        assert!(!plain[0].contains("PREDICTED"), "{plain:?}");
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(compact_number(0.5), "0.5");
        assert_eq!(compact_number(0.12345), "0.1235");
        assert_eq!(compact_number(3.0), "3");
        assert_eq!(compact_number(-2.25), "-2.25");
        assert_eq!(compact_number(0.0), "0");
        assert_eq!(compact_number(1.5e-7), "1.500e-7");
        assert_eq!(compact_number(2.0e9), "2.000e9");
    }
}
