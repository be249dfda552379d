//! The `hids` command line: parse arguments, call the library, map errors to exit codes.
//!
//! Exit codes: 0 success; 1 the command worked and found something (changes, alerts); 2 an error
//! (bad configuration, unreadable input, a feature not available yet).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use hids::config;

#[derive(Parser)]
#[command(
    name = "hids",
    version,
    about = "Host intrusion detection for Linux API servers",
    long_about = "Host intrusion detection for Linux API servers: file integrity monitoring with a \
BLAKE3 baseline, log analysis with OSSEC-compatible decoders and rules, and alerts to files, syslog \
and email.\n\nThe configuration is read from --config, else $HIDS_CONFIG, else /etc/hids/hids.toml \
(etc/hids.toml of the checkout for a development build)."
)]
struct Cli {
    /// Configuration file
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "HIDS_CONFIG",
        value_name = "PATH"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground: FIM scans and watches, log sources, analysis, alerts
    Run(RunArgs),
    /// File integrity: build the baseline, check against it, inspect it
    #[command(subcommand)]
    Fim(FimCommand),
    /// Test decoders and rules on log lines read from stdin (or -f FILE), as ossec-logtest does
    Logtest(LogtestArgs),
    /// Run the configured log sources and print each event as one JSON line on stdout: what hids reads
    Tail(TailArgs),
    /// Alert outputs: send a test alert, show or deliver what waits in the spool
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// The agent's health: uptime, sources and positions, event and alert rates, spool depth;
    /// exit 1 when no agent is running
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration (and the decoders and rules it names); list every error
    CheckConfig,
    /// Print the version, the database schema version and the default paths
    Version,
}

#[derive(Args)]
struct RunArgs {
    /// Format of the agent's own diagnostic log on stderr
    #[arg(long, value_enum, default_value_t = LogStyle::Text)]
    log_format: LogStyle,
}

#[derive(Args)]
struct TailArgs {
    /// Read what the sources hold now and exit, instead of following them
    #[arg(long)]
    once: bool,
    /// Print only the number of events, at the end
    #[arg(long)]
    count: bool,
    /// Find file changes by polling (every 250 ms) instead of inotify, for file systems where
    /// inotify sees nothing (NFS, some container mounts)
    #[arg(long)]
    poll: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogStyle {
    Text,
    Json,
}

#[derive(Subcommand)]
enum FimCommand {
    /// Walk the configured paths and record the baseline (replacing any existing one)
    Init {
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// Rescan, report every change and update the baseline; exit 1 when something changed
    Check {
        /// One JSON object per change
        #[arg(long)]
        json: bool,
        /// Rehash every file, whatever its metadata says
        #[arg(long)]
        full: bool,
    },
    /// List what the baseline holds, optionally under PREFIX
    List {
        prefix: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one baseline entry, every attribute, and its recorded changes
    Show {
        path: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Send test alerts through every configured output (files, syslog, email) and wait for their
    /// delivery; exit 1 when some are still waiting (they stay spooled for the next start)
    Test {
        /// How many alerts
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 7)]
        level: u8,
        #[arg(long, default_value_t = hids::outputs::cli::TEST_RULE)]
        rule_id: u32,
        #[arg(long, default_value = "hids test alert")]
        description: String,
        /// The log line the alert carries
        #[arg(long)]
        full_log: Option<String>,
        /// Rule groups (repeatable); default hids, test
        #[arg(long = "group")]
        groups: Vec<String>,
        /// A decoded field NAME=VALUE (repeatable)
        #[arg(long = "field", value_name = "NAME=VALUE")]
        fields: Vec<String>,
        /// As if the rule had the alert_by_email option
        #[arg(long)]
        alert_by_email: bool,
        /// Seconds to wait for delivery
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Deliver what the spool holds (left by a stopped agent), waiting up to --timeout seconds
    Flush {
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Alerts waiting in the spool, per output
    Status,
}

#[derive(Args)]
struct LogtestArgs {
    /// Read lines from FILE instead of stdin
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// One JSON object per input line
    #[arg(long)]
    json: bool,
    /// Print only a summary at the end
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Treat input as this log format (syslog, json, nginx, apache, audit, plain)
    #[arg(long, default_value = "syslog")]
    log_format: String,
    /// The location (OSSEC's log location) given to each event
    #[arg(long, default_value = "stdin")]
    location: String,
    /// Decoder file or directory; repeatable; replaces the configured set
    #[arg(long = "decoders", value_name = "PATH")]
    decoders: Vec<PathBuf>,
    /// Rule file or directory; repeatable, loaded in the order given; replaces the configured set
    #[arg(long = "rules", value_name = "PATH")]
    rules: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "hids: {}",
                hids::diag::escape_control_keep_newlines(&format!("{e:#}"))
            );
            ExitCode::from(2)
        }
    }
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config.clone().unwrap_or_else(config::default_path)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Version => {
            println!("hids {}", env!("CARGO_PKG_VERSION"));
            println!("database schema version {}", hids::state::schema_version());
            println!("default configuration {}", config::default_path().display());
            println!(
                "default state directory {}",
                config::default_state_dir().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
            let path = config_path(&cli);
            match config::load(&path) {
                Ok(cfg) => {
                    println!("{}: configuration OK", path.display());
                    println!(
                        "  {} FIM path(s), {} log source(s), {} syslog output(s), email {}",
                        cfg.fim.paths.len(),
                        cfg.logs.len(),
                        cfg.alerts.syslog.len(),
                        if cfg.alerts.email.is_some() {
                            "on"
                        } else {
                            "off"
                        }
                    );
                    for w in hids::agent::metrics::config_warnings(&cfg) {
                        eprintln!("warning: {w}");
                    }
                    let report = hids::decode::check_configured(&cfg);
                    for w in &report.warnings {
                        eprintln!("warning: {w}");
                    }
                    if !report.errors.is_empty() {
                        for d in &report.errors {
                            eprintln!("{d}");
                        }
                        eprintln!("decoders: {} error(s)", report.errors.len());
                        return Ok(ExitCode::from(2));
                    }
                    println!(
                        "  {} decoder(s) from {} file(s), {} warning(s)",
                        report.decoders,
                        report.files,
                        report.warnings.len()
                    );
                    let rules = hids::rules::stage::check_configured(&cfg);
                    if !rules.errors.is_empty() {
                        for d in &rules.errors {
                            eprintln!("{d}");
                        }
                        eprintln!("rules: {} error(s)", rules.errors.len());
                        return Ok(ExitCode::from(2));
                    }
                    for w in &rules.warnings {
                        eprintln!("warning: {w}");
                    }
                    for id in &rules.non_linear {
                        eprintln!("warning: rule {id} uses a pattern that needs backtracking (bounded, not linear-time)");
                    }
                    println!("  {} rule(s) from {} file(s)", rules.rules, rules.files);
                    Ok(ExitCode::SUCCESS)
                }
                Err(config::ConfigError::Invalid { diagnostics, .. }) => {
                    for d in &diagnostics {
                        eprintln!("{d}");
                    }
                    eprintln!("{}: {} error(s)", path.display(), diagnostics.len());
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Run(args) => {
            let cfg = config::load(&config_path(&cli))?;
            hids::agent::init_logging(
                &cfg.agent.log_level,
                matches!(args.log_format, LogStyle::Json),
            );
            hids::agent::run(&cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fim(cmd) => {
            let cfg = config::load(&config_path(&cli))?;
            hids::agent::init_logging("warn", false);
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
            let code = match cmd {
                FimCommand::Init { json } => hids::fim::cli::init(&cfg, *json, &mut out, &mut err),
                FimCommand::Check { json, full } => {
                    hids::fim::cli::check(&cfg, *json, *full, &mut out, &mut err)
                }
                FimCommand::List { prefix, json } => {
                    hids::fim::cli::list(&cfg, prefix.as_deref(), *json, &mut out)
                }
                FimCommand::Show { path, json } => {
                    hids::fim::cli::show(&cfg, path, *json, &mut out, &mut err)
                }
            }?;
            Ok(ExitCode::from(code))
        }
        Command::Logtest(a) => {
            let cmd = hids::logtest::Command {
                config: config_path(&cli),
                file: a.file.clone(),
                json: a.json,
                quiet: a.quiet,
                log_format: a.log_format.clone(),
                location: a.location.clone(),
                decoders: a.decoders.clone(),
                rules: a.rules.clone(),
            };
            // Rules named on the command line must load; configured ones that do not load leave
            // phases 1 and 2 usable (check-config reports them).
            let mut stage = match hids::rules::stage::logtest_stage(&cmd) {
                Ok(s) => Some(s),
                Err(hids::rules::stage::StageError::Rules(e)) if !cmd.rules.is_empty() => {
                    for d in &e.0 {
                        eprintln!("{d}");
                    }
                    eprintln!("hids: {} error(s) in the rules", e.0.len());
                    return Ok(ExitCode::from(2));
                }
                Err(hids::rules::stage::StageError::Rules(e)) => {
                    eprintln!(
                        "hids: warning: the configured rules do not load ({} error(s), see hids check-config); phase 3 is skipped",
                        e.0.len()
                    );
                    None
                }
                Err(e) => return Err(e.into()),
            };
            let stage = stage
                .as_mut()
                .map(|s| s as &mut dyn hids::logtest::RuleStage);
            let summary = hids::logtest::run_command(&cmd, stage)?;
            Ok(if summary.alerts.keys().any(|(_, level)| *level > 0) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Tail(a) => {
            let cfg = config::load(&config_path(&cli))?;
            hids::sources::tail_cmd::init_diagnostics(&cfg.agent.log_level);
            let opts = hids::sources::tail_cmd::TailOptions {
                once: a.once,
                count: a.count,
                poll: a.poll,
            };
            hids::sources::tail_cmd::run(&cfg, opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let cfg = config::load(&config_path(&cli))?;
            let running = hids::agent::status::print(&cfg, *json, &mut std::io::stdout().lock())?;
            Ok(ExitCode::from(if running { 0 } else { 1 }))
        }
        Command::Alerts(a) => {
            let cfg = config::load(&config_path(&cli))?;
            alerts_command(&cfg, a)
        }
    }
}

fn alerts_command(cfg: &config::Config, a: &AlertsCommand) -> anyhow::Result<ExitCode> {
    use hids::outputs::cli;
    use std::time::Duration;
    let report = match a {
        AlertsCommand::Status => {
            let waiting = cli::status(cfg)?;
            if waiting.is_empty() {
                println!("spool empty");
            }
            for (o, n) in &waiting {
                println!("{o}: {n} waiting");
            }
            return Ok(ExitCode::SUCCESS);
        }
        AlertsCommand::Flush { timeout } => cli::flush(cfg, Duration::from_secs(*timeout))?,
        AlertsCommand::Test {
            count,
            level,
            rule_id,
            description,
            full_log,
            groups,
            fields,
            alert_by_email,
            timeout,
        } => {
            let mut t = cli::TestAlert {
                level: *level,
                rule_id: *rule_id,
                description: description.clone(),
                full_log: full_log.clone(),
                alert_by_email: *alert_by_email,
                ..Default::default()
            };
            if !groups.is_empty() {
                t.groups = groups.clone();
            }
            for f in fields {
                let (k, v) = f
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--field {f:?}: expected NAME=VALUE"))?;
                t.fields.push((k.to_string(), v.to_string()));
            }
            let r = cli::test(cfg, &t, *count, Duration::from_secs(*timeout))?;
            println!(
                "{} alert(s) spooled for: {}",
                r.spooled,
                r.outputs.join(", ")
            );
            if r.by_agent {
                println!("the running agent delivers them");
            }
            r
        }
    };
    if report.waiting.is_empty() {
        println!("all delivered");
        Ok(ExitCode::SUCCESS)
    } else {
        for (o, n) in &report.waiting {
            println!("{o}: {n} still waiting (kept in the spool)");
        }
        Ok(ExitCode::from(1))
    }
}
