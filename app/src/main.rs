//! The `tributary` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tokio::sync::watch;
use tributary::commands::{conflicts as queue, dead_letters, demo, restore, snapshots, status};
use tributary::runtime::{self, Roles};
use tributary::Config;

/// mimalloc rather than glibc's allocator: the capture allocates and frees a few small
/// buffers per row (row images, encoded key and value), and glibc's malloc and free were
/// about a tenth of its time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tributary: change data capture from PostgreSQL into Kafka and downstream databases.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "tributary.toml",
        env = "TRIBUTARY_CONFIG"
    )]
    config: PathBuf,
    /// Address of the control plane, instead of the configuration's `[api] listen` (a
    /// capture and a pipeline on one machine need two).
    #[arg(long, global = true, env = "TRIBUTARY_API_LISTEN", value_name = "ADDR")]
    api_listen: Option<std::net::SocketAddr>,
    /// Stop the whole run at the first task that fails for good (`[retry] fail_fast`);
    /// without it, the other tasks go on.
    #[arg(long, global = true)]
    fail_fast: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run capture agents, apply loops and the schema registry endpoint together.
    Run,
    /// Run only the capture agents.
    Capture,
    /// Run only the apply loops (and the schema registry endpoint, when configured).
    Pipeline,
    /// Serve only the schema registry endpoint (`[registry] listen`).
    Registry,
    /// Show how far each sink has applied each source.
    Status,
    /// Check the configuration and print it back.
    Check,
    /// List the conflicts of `manual` columns waiting for a choice, or resolve one.
    Conflicts {
        /// The id of the conflict to resolve (from the list).
        #[arg(long)]
        resolve: Option<String>,
        /// The value to keep: "current" (the row's value the change did not see) or
        /// "incoming" (the change's); it is written into the source the change came from.
        #[arg(long, default_value = "incoming")]
        take: String,
    },
    /// Apply the dead-letter entries the rules now accept (after a fix), and remove them
    /// from the dead-letter files; the others stay, and are listed with their reason.
    ReplayDeadLetters {
        /// Only this sink's files.
        #[arg(long)]
        sink: Option<String>,
        /// Only this source's files.
        #[arg(long)]
        source: Option<String>,
    },
    /// Continuous backup: check what the `[backup]` store holds.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotAction,
    },
    /// Point-in-time restore: replays a source's archived events, up to a time or a
    /// source position, into a database, and reports what it did.
    Restore {
        /// How far: an RFC 3339 time (2026-12-01T10:00:00Z), `latest`, or a source
        /// position (pg:0/16B3748, mysql:<binlog file number>:<offset>).
        #[arg(long)]
        to: String,
        /// The database to restore into: postgres://… or mysql://…; for a file set
        /// (`--source <set>`), the directory every file is restored under, at its
        /// absolute path.
        #[arg(long, required_unless_present = "dry_run")]
        target: Option<String>,
        /// The archived source, or a file set (`[backup.files.<set>]`) (default: the only
        /// archived source).
        #[arg(long)]
        source: Option<String>,
        /// Only these tables: schema.table patterns, comma separated, `*` wildcards; for a
        /// file set, only the paths starting with these.
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
        /// Schema (MySQL: database) every table is restored into; default the source's.
        #[arg(long)]
        target_schema: Option<String>,
        /// Read and verify what would be restored, and report it, writing nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Demonstration on a pharmacy dataset between two PostgreSQL databases
    /// (see scripts/demo.sh, which starts the servers).
    Demo(demo::DemoArgs),
}

#[derive(Subcommand)]
enum SnapshotAction {
    /// Take a snapshot of each archived source now (its tables, consistent with one
    /// position of its log), and of each file set, into the `[backup]` store.
    Create {
        /// Only this source, or this file set.
        #[arg(long)]
        source: Option<String>,
    },
    /// Apply the retention settings (`max_backups`, `max_age`): delete the snapshots and
    /// archive segments no restore within the window needs.
    Prune {
        /// Only this source, or this file set.
        #[arg(long)]
        source: Option<String>,
        /// Only report what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the snapshots in the store.
    List {
        /// Only this source's, or this file set's.
        #[arg(long)]
        source: Option<String>,
    },
    /// Re-read every archived object and check checksums, the manifest chain and
    /// gap-free coverage; fails naming the first object that is missing or damaged.
    Verify {
        /// Only this source's archive and snapshots, or this file set's snapshots.
        #[arg(long)]
        source: Option<String>,
        /// Then restore each source to its newest archived instant into a new database
        /// on the --scratch server, read every table back, and compare row counts and
        /// content checksums with what the archive says.
        #[arg(long, requires = "scratch")]
        restore_test: bool,
        /// The scratch server for --restore-test (postgres://… or mysql://…, of any
        /// kind; the user may create databases). The test database is dropped
        /// when it checks out, kept for a look otherwise.
        #[arg(long)]
        scratch: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    let roles = match &cli.command {
        Command::Run => Roles {
            capture: true,
            pipeline: true,
            registry: true,
            api: true,
        },
        Command::Capture => Roles {
            capture: true,
            pipeline: false,
            registry: false,
            api: true,
        },
        Command::Pipeline => Roles {
            capture: false,
            pipeline: true,
            registry: true,
            api: true,
        },
        Command::Registry => Roles {
            capture: false,
            pipeline: false,
            registry: true,
            api: false,
        },
        Command::Demo(args) => return demo::run(args.clone()).await,
        Command::Check => {
            print!("{}", Config::load(&cli.config)?.describe());
            return Ok(());
        }
        Command::Status => {
            print!("{}", status::report(&Config::load(&cli.config)?).await);
            return Ok(());
        }
        Command::Snapshot { action } => return snapshot(&Config::load(&cli.config)?, action).await,
        Command::Restore {
            to,
            target,
            source,
            tables,
            target_schema,
            dry_run,
        } => {
            let request = restore::RestoreRequest {
                to: to.clone(),
                target: target.clone().filter(|_| !dry_run),
                source: source.clone(),
                tables: tables.clone(),
                target_schema: target_schema.clone(),
            };
            print!(
                "{}",
                restore::run(&Config::load(&cli.config)?, &request).await?
            );
            return Ok(());
        }
        Command::Conflicts { resolve, take } => {
            let config = Config::load(&cli.config)?;
            match resolve {
                Some(id) => {
                    queue::resolve(&config, id, take).await?;
                    println!("resolved {id}: the {take} value was written into its source");
                }
                None => print!("{}", queue::WaitingReport(queue::waiting(&config)?)),
            }
            return Ok(());
        }
        Command::ReplayDeadLetters { sink, source } => {
            let config = Config::load(&cli.config)?;
            let report =
                dead_letters::replay_all(&config, sink.as_deref(), source.as_deref()).await;
            print!("{report}");
            return report.error.map_or(Ok(()), |e| Err(e.into()));
        }
    };
    let mut config = Config::load(&cli.config)?;
    if let Some(listen) = cli.api_listen {
        config.api.listen = listen;
        config
            .api
            .validate()
            .map_err(|e| anyhow::anyhow!("--api-listen: {e}"))?;
    }
    if cli.fail_fast {
        config.retry.fail_fast = true;
    }
    if matches!(cli.command, Command::Registry) && config.registry.is_none() {
        anyhow::bail!(
            "{}: registry.listen is not set; add [registry] listen = \"0.0.0.0:8081\"",
            cli.config.display()
        );
    }
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    let stats = runtime::stats_for(&config);
    runtime::run(config, roles, stats, shutdown).await?;
    Ok(())
}

/// `tributary snapshot …`.
async fn snapshot(config: &Config, action: &SnapshotAction) -> anyhow::Result<()> {
    match action {
        SnapshotAction::Create { source } => {
            let report = snapshots::create(config, source.as_deref()).await?;
            print!("{report}");
            if let Some(e) = report.error {
                return Err(e.into());
            }
        }
        SnapshotAction::Prune { source, dry_run } => {
            print!(
                "{}",
                snapshots::prune(config, source.as_deref(), *dry_run).await?
            );
        }
        SnapshotAction::List { source } => {
            print!("{}", snapshots::list(config, source.as_deref()).await?);
        }
        SnapshotAction::Verify {
            source,
            restore_test,
            scratch,
        } => {
            let scratch = scratch.as_deref().filter(|_| *restore_test);
            let report = snapshots::verify(config, source.as_deref(), scratch).await?;
            print!("{report}");
            if let Some(e) = report.error {
                return Err(e.into());
            }
            if !report.ok() {
                let failed: Vec<String> = report
                    .restore_tests
                    .iter()
                    .filter(|r| !r.ok())
                    .map(|r| format!("{} (kept: database {})", r.source, r.database))
                    .collect();
                anyhow::bail!(
                    "restore test: the restored tables differ from what the archive says for {}",
                    failed.join(", ")
                );
            }
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
