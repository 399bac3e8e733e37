//! The command line: what users type, parsed with clap, and the dispatch to each command.

use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::emulator::{
    self, EmulatorConfig, Fault, FaultRates, LatencyModel, ModelProfile, OutputLength,
};
use crate::error::{Error, ExitKind};
use crate::inspect::{
    PlanOptions, QuotasOptions, ReportOptions, Scope, Wanted, plan, quotas, quotas_of_model,
    report, request_quotas, status,
};
use crate::job::{Endpoint, Job, Mode};
use crate::report::progress::ProgressMode;
use crate::run::{
    Connection, Endpoints, Expected, RunOutcome, Shutdown, SubmitOptions, cancel, submit,
};

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    the job finished and some records failed
  2    usage, job file or configuration error
  69   the model's daily token quota is used up; run the same command again once it has refilled
       (or set budget.on-daily-quota = \"wait\")
  70   internal error
  75   the job is already running in another process (submit without --wait)
  130  interrupted (Ctrl-C); run the same command again to resume";

/// Batch inference job runner for Amazon Bedrock.
#[derive(Debug, Parser)]
#[command(name = "batchrun", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log more (-v: debug, -vv: trace); `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Messages on standard error as `text`, or as `json`: one object a line (start, progress, each part
    /// published, finish, and every message with its level), for journald or CloudWatch.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job, or resume it: records already done are not sent again.
    #[command(after_help = EXIT_CODES)]
    Submit(SubmitArgs),
    /// Before a run: records, tokens, what each quota allows, expected time and cost, and what quota a
    /// deadline needs. Reads the inputs; sends nothing (`--exact` asks Bedrock's CountTokens, which is free).
    Plan(PlanArgs),
    /// Every job in a state database, or one: counts, tokens, rate, ETA and the last errors.
    Status(StatusArgs),
    /// A job's runs summarized and diagnosed: which quota ran out and why, what max-tokens cost, what
    /// failed, and what to change, in numbers. `--html FILE` also writes a page with charts.
    Report(ReportArgs),
    /// The account's Bedrock quotas for the job's model, from Service Quotas: requests and tokens per minute and
    /// tokens per day, on-demand, cross-region and global, applied and default values and quota codes.
    Quotas(QuotasArgs),
    /// Run a local Bedrock Runtime with a simulated quota, for tests, demos and rehearsing a job.
    Emulator(EmulatorArgs),
    /// Stop a job's Bedrock batch inference jobs (they run at AWS after Ctrl-C); the records they did not
    /// answer go on demand, or fail, at the next `submit`.
    Cancel(CancelArgs),
}

/// `batchrun quotas`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QuotasArgs {
    /// `request`: ask for an increase.
    #[command(subcommand)]
    pub action: Option<QuotasAction>,
    /// The job file.
    pub job: Option<PathBuf>,
    /// Without a job: the model id or inference profile id whose quotas to show.
    #[arg(long, value_name = "ID", conflicts_with = "job")]
    pub model: Option<String>,
    /// With --model: the Region [default: the AWS configuration's].
    #[arg(long, value_name = "REGION", requires = "model")]
    pub region: Option<String>,
}

/// What `batchrun quotas` does besides showing.
#[derive(Debug, Subcommand)]
pub enum QuotasAction {
    /// Print the increase request for the quotas the job's calls count against (quota code, current and
    /// desired value, the AWS CLI command); `--submit` sends it.
    Request(QuotaRequestArgs),
}

/// `batchrun quotas request`.
#[derive(Debug, Args)]
pub struct QuotaRequestArgs {
    /// The job file.
    pub job: PathBuf,
    /// Tokens per minute wanted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000_000))]
    pub tpm: Option<u64>,
    /// Requests per minute wanted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000_000))]
    pub rpm: Option<u64>,
    /// Send the request with RequestServiceQuotaIncrease (otherwise it is only printed).
    #[arg(long)]
    pub submit: bool,
}

/// `batchrun status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A job file or a job name; left out, every job in the state database.
    pub job: Option<String>,
    /// The state database [default: the job file's, or .batchrun/state.db here].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `batchrun report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A job file or a job name.
    pub job: String,
    /// The state database [default: the job file's, or .batchrun/state.db here].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Also write a self-contained HTML page with charts to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Say what RPM and TPM finish the job within this time [default: twice as fast as it ran].
    #[arg(long, value_parser = parse_duration, value_name = "TIME")]
    pub deadline: Option<Duration>,
    /// A model table (TOML, as jobs/models.toml: burndown, context, prices) laid over the built-in one;
    /// BATCHRUN_MODELS also works.
    #[arg(long, alias = "prices", value_name = "FILE")]
    pub models: Option<PathBuf>,
}

/// `batchrun plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The job file.
    pub job: PathBuf,
    /// The state database, for what an earlier run measured [default: .batchrun/state.db in the job file's
    /// folder; never created by plan].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Count input tokens with Bedrock's CountTokens API instead of locally.
    #[arg(long)]
    pub exact: bool,
    /// Say what RPM and TPM finish the job within this time, e.g. 6h, 90m, 45s.
    #[arg(long, value_parser = parse_duration, value_name = "TIME")]
    pub deadline: Option<Duration>,
    /// A model table (TOML, as jobs/models.toml: burndown, context, prices) laid over the built-in one;
    /// BATCHRUN_MODELS also works.
    #[arg(long, alias = "prices", value_name = "FILE")]
    pub models: Option<PathBuf>,
    /// Expected output tokens per record [default: observed by an earlier run, or from the emulator profile,
    /// or half of max-tokens].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=2_147_483_647))]
    pub output_tokens: Option<u64>,
    /// Expected time per request, e.g. 2s or 800ms [default: observed, or from the emulator profile, or 0.5s +
    /// 20ms per output token].
    #[arg(long, value_parser = parse_duration, value_name = "TIME")]
    pub latency: Option<Duration>,
}

// The longest time a flag takes: beyond it no arithmetic on times is safe, and no run is that long.
const MAX_DURATION_SECS: f64 = 10.0 * 365.0 * 86_400.0;

/// `90m`, `6h`, `1h30m`, `45s`, `800ms`, or plain seconds; at most ten years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let secs = duration_secs(text)?;
    if secs > MAX_DURATION_SECS {
        return Err(format!("`{text}` is too long: at most 10 years (3650d)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn duration_secs(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let not_a_duration = || format!("`{text}` is not a duration (e.g. 6h, 90m, 1h30m, 45s)");
    if let Ok(secs) = t.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(secs)
        } else {
            Err(not_a_duration())
        };
    }
    let mut total = 0.0;
    let mut number = String::new();
    let mut chars = t.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                0.001
            }
            ('h', _) => 3600.0,
            ('m', _) => 60.0,
            ('s', _) => 1.0,
            ('d', _) => 86400.0,
            _ => return Err(not_a_duration()),
        };
        let n: f64 = number.parse().map_err(|_| not_a_duration())?;
        total += n * unit;
        number.clear();
        any = true;
    }
    if !any || !number.is_empty() || !total.is_finite() {
        return Err(not_a_duration());
    }
    Ok(total)
}

/// Seconds for `--grace`: zero to a day.
fn parse_grace(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if (0.0..=86_400.0).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "`{text}` is not a number of seconds from 0 to 86400"
        )),
    }
}

/// `batchrun submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job file.
    pub job: PathBuf,
    /// The state database [default: .batchrun/state.db in the job file's folder].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Discard this job's earlier results and start over (needed after changing its settings or inputs).
    #[arg(long)]
    pub fresh: bool,
    /// Seconds calls in flight may take to finish after the first Ctrl-C.
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = parse_grace)]
    pub grace: f64,
    /// If another process runs the job, wait for it to end and then resume, instead of exiting with 75.
    #[arg(long)]
    pub wait: bool,
    /// Progress: `auto` (a bar on a terminal, a line every 10 s otherwise), `lines`, or `off`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "lines", "off"])]
    pub progress: String,
    /// How the records reach Bedrock, instead of the job file's `job.mode`: `on-demand`, `batch` (Bedrock batch
    /// inference, `[batch]`) or `auto`.
    #[arg(long, value_name = "MODE", value_parser = ["on-demand", "batch", "auto"])]
    pub mode: Option<String>,
}

/// `batchrun cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job file.
    pub job: PathBuf,
    /// The state database [default: .batchrun/state.db in the job file's folder].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
}

/// `batchrun emulator`: flags describe one model profile that serves every model id, or `--profile` names a
/// TOML file with a profile per model.
#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free port. The first line of standard output names the address.
    #[arg(long, default_value_t = 8480)]
    pub port: u16,
    /// TOML profile with a `[models."ID"]` table per model (`"*"` serves any id); replaces the model flags.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Seed for fault draws and latency jitter (overrides the profile's).
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub model: ModelFlags,
}

/// The model profile, as flags.
#[derive(Debug, Args)]
pub struct ModelFlags {
    /// Requests per minute (no request quota when left out).
    #[arg(long, conflicts_with = "profile")]
    pub rpm: Option<u64>,
    /// Tokens per minute, reserved as input + maxTokens and settled to input + output × burndown.
    #[arg(long, conflicts_with = "profile")]
    pub tpm: Option<u64>,
    /// Tokens per day.
    #[arg(long, conflicts_with = "profile")]
    pub tpd: Option<u64>,
    /// How full the quota buckets are at start, 0 to 1 (below 1: a quota already in use elsewhere).
    #[arg(long, default_value_t = 1.0, conflicts_with = "profile")]
    pub initial_fill: f64,
    /// Quota tokens charged per output token.
    #[arg(long, default_value_t = 1, conflicts_with = "profile")]
    pub burndown: u32,
    /// Largest input in tokens; longer inputs fail validation.
    #[arg(long, default_value_t = 200_000, conflicts_with = "profile")]
    pub context_window: u64,
    /// Largest maxTokens accepted, and the reservation when a request sets none.
    #[arg(long, default_value_t = 4096, conflicts_with = "profile")]
    pub max_output_tokens: u64,
    /// Reply length in tokens before maxTokens caps it: MIN..MAX (uniform per prompt) or N.
    #[arg(long, default_value = "20..200", conflicts_with = "profile")]
    pub output_tokens: OutputLength,
    /// Latency before the first token, in milliseconds.
    #[arg(long, default_value_t = 0.0, conflicts_with = "profile")]
    pub first_token_ms: f64,
    /// Latency per output token, in milliseconds.
    #[arg(long, default_value_t = 0.0, conflicts_with = "profile")]
    pub per_token_ms: f64,
    /// Relative latency jitter in 0..1 (0.2 = ±20 %).
    #[arg(long, default_value_t = 0.0, conflicts_with = "profile")]
    pub jitter: f64,
    /// Requests served at once; beyond it the emulator answers 503.
    #[arg(long, conflicts_with = "profile")]
    pub max_concurrency: Option<u32>,
    /// Inject a fault at a rate, as KIND=RATE; repeat for several. Kinds: service-unavailable, internal,
    /// model-timeout, model-error, model-not-ready, connection-reset, hang, malformed.
    #[arg(long = "fault", value_name = "KIND=RATE", conflicts_with = "profile")]
    pub faults: Vec<FaultRate>,
    /// How long a hanging request hangs, in milliseconds.
    #[arg(long, default_value_t = 30_000, conflicts_with = "profile")]
    pub hang_ms: u64,
}

/// One `--fault KIND=RATE`.
#[derive(Debug, Clone, Copy)]
pub struct FaultRate {
    /// The fault.
    pub fault: Fault,
    /// Its probability per request.
    pub rate: f64,
}

impl FromStr for FaultRate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, rate) = s.split_once('=').ok_or_else(|| {
            format!("expected KIND=RATE, e.g. service-unavailable=0.02, got `{s}`")
        })?;
        let fault = kind.parse::<Fault>()?;
        let rate = rate
            .parse::<f64>()
            .map_err(|_| format!("the rate in `{s}` is not a number"))?;
        Ok(FaultRate { fault, rate })
    }
}

impl ModelFlags {
    fn profile(&self) -> ModelProfile {
        let mut faults = FaultRates {
            hang_ms: self.hang_ms,
            ..FaultRates::default()
        };
        for f in &self.faults {
            faults.set_rate(f.fault, f.rate);
        }
        ModelProfile {
            rpm: self.rpm,
            tpm: self.tpm,
            tpd: self.tpd,
            initial_fill: self.initial_fill,
            burndown: self.burndown,
            context_window: self.context_window,
            max_output_tokens: self.max_output_tokens,
            output_tokens: self.output_tokens,
            latency: LatencyModel {
                first_token_ms: self.first_token_ms,
                per_token_ms: self.per_token_ms,
                jitter: self.jitter,
            },
            max_concurrency: self.max_concurrency,
            faults,
            ..ModelProfile::default()
        }
    }
}

impl EmulatorArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> Result<EmulatorConfig, Error> {
        let mut config = match &self.profile {
            Some(path) => EmulatorConfig::load(path)?,
            None => EmulatorConfig::any_model(self.model.profile(), 0),
        };
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs the parsed command line and says how the process should exit.
pub async fn run(cli: Cli) -> Result<ExitKind, Error> {
    if cli.log_format == "json" {
        crate::say::use_json();
    }
    match cli.command {
        Command::Submit(args) => run_submit(args).await,
        Command::Cancel(args) => {
            for line in cancel(&args.job, args.state, &StandardEndpoints).await? {
                crate::say!("{line}");
            }
            Ok(ExitKind::Ok)
        }
        Command::Plan(args) => {
            let text = plan(&PlanOptions {
                job_file: args.job,
                state: args.state,
                exact: args.exact,
                deadline: args.deadline,
                models: args.models,
                output_tokens: args.output_tokens,
                latency: args.latency,
                endpoints: Arc::new(StandardEndpoints),
            })
            .await?;
            print(&text)
        }
        Command::Status(args) => {
            let text = status(
                &Scope {
                    job: args.job,
                    state: args.state,
                },
                args.json,
            )
            .await?;
            print(&text)
        }
        Command::Report(args) => {
            let text = report(&ReportOptions {
                scope: Scope {
                    job: Some(args.job),
                    state: args.state,
                },
                html: args.html.clone(),
                deadline: args.deadline,
                models: args.models,
            })
            .await?;
            if let Some(p) = &args.html {
                crate::say!("wrote {}", p.display());
            }
            print(&text)
        }
        Command::Quotas(args) => run_quotas(args).await,
        Command::Emulator(args) => run_emulator(args).await,
    }
}

async fn run_quotas(args: QuotasArgs) -> Result<ExitKind, Error> {
    let endpoints = Arc::new(StandardEndpoints);
    let text = match (args.action, args.job) {
        (Some(QuotasAction::Request(r)), _) => {
            if r.tpm.is_none() && r.rpm.is_none() {
                return Err(Error::QuotaRequest {
                    message: "say what to ask for: --tpm N, --rpm N or both".into(),
                });
            }
            let opts = QuotasOptions {
                job_file: r.job,
                endpoints,
            };
            let wanted = Wanted {
                rpm: r.rpm,
                tpm: r.tpm,
                submit: r.submit,
            };
            request_quotas(&opts, wanted).await?
        }
        (None, Some(job)) => {
            quotas(&QuotasOptions {
                job_file: job,
                endpoints,
            })
            .await?
        }
        (None, None) if args.model.is_some() => {
            let model = args.model.unwrap_or_default();
            quotas_of_model(&model, args.region.as_deref()).await?
        }
        (None, None) => {
            return Err(Error::QuotaRequest {
                message:
                    "which job? `batchrun quotas JOB` or `batchrun quotas request JOB --tpm N`"
                        .into(),
            });
        }
    };
    print(&text)
}

fn print(text: &str) -> Result<ExitKind, Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(Error::Stdout)?;
    out.flush().map_err(Error::Stdout)?;
    Ok(ExitKind::Ok)
}

async fn run_submit(args: SubmitArgs) -> Result<ExitKind, Error> {
    let progress = match args.progress.as_str() {
        "lines" => ProgressMode::Lines(Duration::from_secs(10)),
        "off" => ProgressMode::Off,
        _ => ProgressMode::Auto,
    };
    let grace = Duration::from_secs_f64(args.grace);
    let opts = SubmitOptions {
        job_file: args.job,
        state: args.state,
        fresh: args.fresh,
        grace,
        progress,
        wait: args.wait,
        endpoints: Arc::new(StandardEndpoints),
        mode: args.mode.as_deref().map(|m| match m {
            "batch" => Mode::Batch,
            "auto" => Mode::Auto,
            _ => Mode::OnDemand,
        }),
    };
    let shutdown = Shutdown::default();
    shutdown.listen(grace);
    Ok(match submit(&opts, shutdown).await? {
        RunOutcome::Finished { failed: 0 } => ExitKind::Ok,
        RunOutcome::Finished { .. } => ExitKind::RecordsFailed,
        RunOutcome::Interrupted => ExitKind::Interrupted,
    })
}

/// The endpoints a job file names: real Bedrock, a URL, or the emulator embedded in this process (started when
/// the run first needs it, with the job's profile, and kept alive by the connection's guard).
#[derive(Debug)]
struct StandardEndpoints;

impl Endpoints for StandardEndpoints {
    fn connect<'a>(
        &'a self,
        job: &'a Job,
    ) -> Pin<Box<dyn Future<Output = Result<Connection, Error>> + Send + 'a>> {
        Box::pin(async move {
            Ok(match &job.endpoint {
                Endpoint::Aws => Connection {
                    url: None,
                    static_credentials: false,
                    guard: None,
                },
                Endpoint::Url(u) => Connection {
                    url: Some(u.clone()),
                    static_credentials: false,
                    guard: None,
                },
                Endpoint::Emulator { profile } => {
                    let config = match profile {
                        Some(p) => EmulatorConfig::load(p)?,
                        None => EmulatorConfig::any_model(ModelProfile::default(), 0),
                    };
                    let handle =
                        emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
                    let url = handle.endpoint();
                    crate::say!("using the embedded Bedrock emulator at {url}");
                    Connection {
                        url: Some(url),
                        static_credentials: true,
                        guard: Some(Box::new(handle)),
                    }
                }
            })
        })
    }

    fn expected(&self, job: &Job) -> Result<Option<Expected>, Error> {
        let Endpoint::Emulator { profile: Some(p) } = &job.endpoint else {
            return Ok(None);
        };
        Ok(EmulatorConfig::load(p)?
            .profile_for(&job.model.id)
            .map(|m| Expected {
                output_min: m.output_tokens.min,
                output_max: m.output_tokens.max,
                first_token_ms: m.latency.first_token_ms,
                per_token_ms: m.latency.per_token_ms,
            }))
    }
}

async fn run_emulator(args: EmulatorArgs) -> Result<ExitKind, Error> {
    let config = args.config()?;
    let summary = describe(&config);
    let handle = emulator::start(config, SocketAddr::new(args.host, args.port)).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", handle.endpoint()).map_err(Error::Stdout)?;
        out.flush().map_err(Error::Stdout)?;
    }
    for line in summary {
        crate::say!("{line}");
    }
    crate::say!(
        "stats at {}{}; point the AWS SDK here with AWS_ENDPOINT_URL_BEDROCK_RUNTIME={}; Ctrl-C stops",
        handle.endpoint(),
        emulator::STATS_PATH,
        handle.endpoint()
    );
    // A failure to install the handler leaves nothing to wait on; serving until killed is still right.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
    let stats = handle.stats();
    handle.shutdown().await;
    let (requests, throttled): (u64, u64) = stats.models.values().fold((0, 0), |(r, t), m| {
        (
            r + m.totals.requests,
            t + m.totals.throttled_rpm + m.totals.throttled_tpm + m.totals.throttled_tpd,
        )
    });
    crate::say!("emulator stopped: {requests} requests served, {throttled} throttled");
    Ok(ExitKind::Ok)
}

fn describe(config: &EmulatorConfig) -> Vec<String> {
    let limit = |name: &str, v: Option<u64>| v.map(|n| format!("{name} {n}"));
    config
        .models
        .iter()
        .map(|(id, m)| {
            let quotas: Vec<String> = [
                limit("rpm", m.rpm),
                limit("tpm", m.tpm),
                limit("tpd", m.tpd),
            ]
            .into_iter()
            .flatten()
            .collect();
            let quotas = if quotas.is_empty() {
                "no quota".to_string()
            } else {
                quotas.join(", ")
            };
            let who = if id == emulator::config::ANY_MODEL {
                "any model id".to_string()
            } else {
                format!("model {id}")
            };
            format!("serving {who}: {quotas}, burndown {}", m.burndown)
        })
        .collect()
}
