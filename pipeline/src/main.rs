//! The `tributary` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tokio::sync::watch;
use tributary_pipeline::runtime::{self, Roles};
use tributary_pipeline::{demo, queue, status, Config};

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
        /// The scratch server for --restore-test (postgres://… or mysql://…, of the
        /// source's kind; the user may create databases). The test database is dropped
        /// when it checks out, kept for a look otherwise.
        #[arg(long)]
        scratch: Option<String>,
    },
}

/// `text` with the passwords of URLs (`scheme://user:password@host`) and the S3 secret
/// key replaced by `***`: what `check` prints must not hold secrets.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_secret = false;
    for line in text.lines() {
        if in_secret {
            // The secret's value spread over the lines up to its closing parenthesis.
            in_secret = !line.trim_start().starts_with(')');
            continue;
        }
        if line.trim_start().starts_with("s3_secret_access_key: Some(") {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(indent);
            out.push_str("s3_secret_access_key: Some(\"***\"),\n");
            in_secret = !line.trim_end().ends_with("),");
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("://") {
            let (head, tail) = rest.split_at(at + 3);
            out.push_str(head);
            let end = tail.find(['"', ' ', '/']).unwrap_or(tail.len());
            let authority = &tail[..end];
            match (authority.rfind('@'), authority.find(':')) {
                (Some(a), Some(c)) if c < a => {
                    out.push_str(&authority[..=c]);
                    out.push_str("***");
                    out.push_str(&authority[a..]);
                }
                _ => out.push_str(authority),
            }
            rest = &tail[end..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

/// The `[backup]` store of the configuration at `path`, and its archived sources (or
/// only `source`, which must be one of them).
fn backup_store(
    path: &std::path::Path,
    source: Option<&str>,
) -> anyhow::Result<(tributary_snapshot::Store, Vec<String>, Vec<String>)> {
    let config = Config::load(path)?;
    let store = tributary_snapshot::Store::open(runtime::backup_of(&config)?)?;
    Ok((
        store,
        runtime::archived_selection(&config, source)?,
        runtime::file_sets(&config, source),
    ))
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
        },
        Command::Capture => Roles {
            capture: true,
            pipeline: false,
            registry: false,
        },
        Command::Pipeline => Roles {
            capture: false,
            pipeline: true,
            registry: true,
        },
        Command::Registry => Roles {
            capture: false,
            pipeline: false,
            registry: true,
        },
        Command::Demo(args) => return demo::run(args.clone()).await,
        Command::Check => {
            let config = Config::load(&cli.config)?;
            println!("{}", redact(&format!("{config:#?}")));
            return Ok(());
        }
        Command::Snapshot {
            action: SnapshotAction::Create { source },
        } => {
            let config = Config::load(&cli.config)?;
            for m in runtime::files_snapshot_create(&config, source.as_deref()).await? {
                println!(
                    "files snapshot {} of set {}: {} entries, {} bytes ({} stored in {} objects)",
                    m.id,
                    m.set,
                    m.files.len(),
                    m.bytes,
                    m.stored_bytes,
                    m.packs.len()
                );
            }
            for m in runtime::snapshot_create(&config, source.as_deref(), None).await? {
                println!(
                    "snapshot {} of {}: {} rows, {} bytes in {} objects, at {}",
                    m.id,
                    m.source,
                    m.rows,
                    m.bytes,
                    m.objects.len(),
                    m.position
                );
            }
            return Ok(());
        }
        Command::Snapshot {
            action: SnapshotAction::Prune { source, dry_run },
        } => {
            let config = Config::load(&cli.config)?;
            let verb = if *dry_run { "would delete" } else { "deleted" };
            for (name, r) in runtime::prune(&config, source.as_deref(), *dry_run).await? {
                if runtime::file_sets(&config, Some(&name)).contains(&name) {
                    println!(
                        "set {name}: {verb} {} files snapshots [{}], {} objects; the oldest kept is {}",
                        r.snapshots.len(),
                        r.snapshots.join(", "),
                        r.objects,
                        r.anchor.as_deref().unwrap_or("the oldest (no retention setting applies)")
                    );
                    continue;
                }
                let oldest = match &r.anchor {
                    Some(id) => format!("snapshot {id}"),
                    None => "the archive's start (no retention setting applies)".to_string(),
                };
                println!(
                    "{name}: {verb} {} snapshots [{}] and {} archive segments, {} objects; the oldest restorable instant is {oldest}",
                    r.snapshots.len(),
                    r.snapshots.join(", "),
                    r.segments,
                    r.objects,
                );
            }
            return Ok(());
        }
        Command::Snapshot {
            action: SnapshotAction::List { source },
        } => {
            let (store, names, sets) = backup_store(&cli.config, source.as_deref())?;
            for set in &sets {
                for m in tributary_snapshot::list_file_snapshots(&store, set).await? {
                    println!(
                        "set {set} {}: {} entries, {} bytes ({} stored), finished {}",
                        m.id,
                        m.files.len(),
                        m.bytes,
                        m.stored_bytes,
                        m.finished_at
                    );
                }
            }
            for name in &names {
                for m in tributary_snapshot::list_snapshots(&store, name).await? {
                    println!(
                        "{name} {}: {} rows, {} bytes, at {}, finished {}",
                        m.id, m.rows, m.bytes, m.position, m.finished_at
                    );
                }
            }
            return Ok(());
        }
        Command::Snapshot {
            action:
                SnapshotAction::Verify {
                    source,
                    restore_test,
                    scratch,
                },
        } => {
            let (store, names, sets) = backup_store(&cli.config, source.as_deref())?;
            for set in &sets {
                for m in tributary_snapshot::list_file_snapshots(&store, set).await? {
                    let files = tributary_snapshot::verify_files(&store, &m).await?;
                    println!(
                        "files snapshot {set} {}: OK: {} objects, {files} files, {} bytes",
                        m.id,
                        m.packs.len(),
                        m.bytes
                    );
                }
            }
            for name in &names {
                let r = tributary_snapshot::verify_archive(&store, name).await?;
                match r.to {
                    None => println!("archive {name}: OK: empty (nothing archived yet)"),
                    Some(to) => println!(
                        "archive {name}: OK: {} segments, {} objects, {} events, {} bytes, from {} to {to}",
                        r.segments,
                        r.objects,
                        r.events,
                        r.bytes,
                        r.from
                            .map_or("the source's first event".to_string(), |p| format!("after {p}")),
                    ),
                }
                for snap in tributary_snapshot::list_snapshots(&store, name).await? {
                    let rows = tributary_snapshot::verify_snapshot(
                        &store,
                        name,
                        &snap,
                        Some(tributary_capture::postgres::relations::decode_copy_line),
                    )
                    .await?;
                    println!(
                        "snapshot {name} {}: OK: {} objects, {rows} rows, at {}",
                        snap.id,
                        snap.objects.len(),
                        snap.position
                    );
                }
            }
            if let (true, Some(scratch)) = (*restore_test, scratch.as_deref()) {
                let config = Config::load(&cli.config)?;
                let mut failed = Vec::new();
                for r in runtime::restore_test(&config, source.as_deref(), scratch).await? {
                    println!(
                        "restore test {}: {} snapshot rows{} and {} archived events restored into {}",
                        r.source,
                        r.report.snapshot_rows,
                        r.report
                            .snapshot
                            .as_deref()
                            .map(|s| format!(" (snapshot {s})"))
                            .unwrap_or_default(),
                        r.report.events,
                        r.database
                    );
                    for t in &r.tables {
                        let verdict = if t.ok() { "OK" } else { "DIFFERS" };
                        println!(
                            "  {} {verdict}: {} rows, checksum {} (the archive says {} rows, checksum {})",
                            t.table,
                            t.restored_rows,
                            t.restored_checksum,
                            t.expected_rows,
                            t.expected_checksum
                        );
                        for d in &t.differences {
                            println!("    {d}");
                        }
                    }
                    if !r.ok() {
                        failed.push(format!("{} (kept: database {})", r.source, r.database));
                    }
                }
                if !failed.is_empty() {
                    anyhow::bail!(
                        "restore test: the restored tables differ from what the archive says for {}",
                        failed.join(", ")
                    );
                }
            }
            return Ok(());
        }
        Command::Restore {
            to,
            target,
            source,
            tables,
            target_schema,
            dry_run,
        } => {
            let config = Config::load(&cli.config)?;
            if let Some(set) = source
                .as_deref()
                .filter(|s| runtime::file_sets(&config, Some(s)).len() == 1)
            {
                if target_schema.is_some() {
                    anyhow::bail!("--target-schema: file set {set} is restored into a directory (--target), not a schema");
                }
                let into = if *dry_run {
                    None
                } else {
                    target.as_deref().map(std::path::Path::new)
                };
                let r = runtime::files_restore(
                    &config,
                    set,
                    &tributary_snapshot::Target::parse(to)?,
                    into,
                    tables,
                )
                .await?;
                let verb = if *dry_run { "would write" } else { "wrote" };
                println!(
                    "restore of file set {set} to {to}: from files snapshot {}: {verb} {} files ({} bytes) and {} directories and links{}",
                    r.snapshot,
                    r.files,
                    r.bytes,
                    r.others,
                    into.map(|d| format!(" under {}", d.display())).unwrap_or_default()
                );
                return Ok(());
            }
            let options = tributary_snapshot::RestoreOptions {
                target: tributary_snapshot::Target::parse(to)?,
                tables: tables.clone(),
                max_tx_events: 10_000,
                batch_rows: 5_000,
                copy_decoder: Some(tributary_capture::postgres::relations::decode_copy_line),
            };
            let target = if *dry_run { None } else { target.as_deref() };
            let started = std::time::Instant::now();
            let (source, r) = runtime::restore(
                &config,
                source.as_deref(),
                &options,
                target,
                target_schema.clone(),
            )
            .await?;
            let verb = if *dry_run { "would apply" } else { "applied" };
            println!(
                "restore of {source} to {to}: {verb} {} events in {} transactions from {} segments in {:.1} s ({} already in the target)",
                r.events,
                r.transactions,
                r.segments,
                started.elapsed().as_secs_f64(),
                r.already
            );
            for (table, n) in &r.tables {
                println!("  {table}: {n} events");
            }
            if let (Some(p), Some(t)) = (r.last_position, r.last_commit_micros) {
                let at = chrono::DateTime::from_timestamp_micros(t)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                println!("  last: {p}, committed {at}");
            }
            if r.archive_ends_before_target {
                println!("  note: the archive ends before {to}; everything archived was restored");
            }
            return Ok(());
        }
        Command::Status => {
            let config = Config::load(&cli.config)?;
            return status::print(&config).await;
        }
        Command::Conflicts { resolve, take } => {
            let config = Config::load(&cli.config)?;
            if let Some(id) = resolve {
                queue::resolve(&config, id, take).await?;
                println!("resolved {id}: the {take} value was written into its source");
                return Ok(());
            }
            let waiting = queue::waiting(&config)?;
            if waiting.is_empty() {
                println!("no conflict is waiting");
            }
            for e in waiting {
                println!(
                    "{}\n  {} key {} column {}: current {} / incoming {} (from {} at {}); now {}",
                    e["id"].as_str().unwrap_or_default(),
                    e["table"].as_str().unwrap_or_default(),
                    e["key"],
                    e["column"].as_str().unwrap_or_default(),
                    e["current"],
                    e["incoming"],
                    e["source"].as_str().unwrap_or_default(),
                    e["position"].as_str().unwrap_or_default(),
                    e["result"],
                );
            }
            return Ok(());
        }
        Command::ReplayDeadLetters { sink, source } => {
            let config = Config::load(&cli.config)?;
            for name in config.sinks.keys() {
                if sink.as_ref().is_some_and(|s| s != name) {
                    continue;
                }
                for (from, _) in config.loops(name) {
                    if source.as_ref().is_some_and(|s| *s != from) {
                        continue;
                    }
                    let report = runtime::replay_dead_letters(&config, name, &from).await?;
                    println!(
                        "sink {name}, source {from}: {} applied, {} kept ({})",
                        report.applied,
                        report.kept.len(),
                        report.path.display()
                    );
                    for reason in &report.kept {
                        println!("  kept: {reason}");
                    }
                }
            }
            return Ok(());
        }
    };
    let config = Config::load(&cli.config)?;
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

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn check_output_holds_no_password() {
        let text = "url: \"postgres://tributary:s3cr%40t@head-office:5432/pharmacy\",\n    s3_secret_access_key: Some(\n        \"abc\",\n    ),\n    s3_secret_access_key: Some(\"abc\"),\n    url: \"mysql://root@h/db\",";
        let out = redact(text);
        assert!(
            out.contains("postgres://tributary:***@head-office:5432/pharmacy"),
            "{out}"
        );
        assert!(out.contains("mysql://root@h/db"), "{out}");
        assert!(!out.contains("s3cr") && !out.contains("abc"), "{out}");
        assert_eq!(
            out.matches("s3_secret_access_key: Some(\"***\")").count(),
            2,
            "{out}"
        );
    }
}
