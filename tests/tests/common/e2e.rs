//! End-to-end scenes: a source server, a sink server, a transport and a state directory,
//! and the comparison of what the sink holds with what the source holds.
//!
//! Both ends are [`Backend`]s, so a scenario written over `Scene<S, B>` runs for every
//! sink kind by naming its backend. The comparison reads the source's columns from its
//! catalog at each check (so a column added mid-stream is compared as soon as it exists)
//! and renders each column on both sides by the expressions the sink's backend gives for
//! the source's kind and the column's type ([`Backend::compared`]): every row of every
//! compared table must then read the same on both sides, in any order.
//!
//! Failure model: a check waits until the sink equals the source or the deadline passes;
//! on timeout the error carries the last difference seen (the rows only one side has, or
//! why the sink could not be read), and says so when the pipeline had stopped.

#![allow(dead_code)] // each test file uses a part

use super::backend::Backend;
use anyhow::Context;
use std::time::Duration;
use tributary::Config;
use tributary_schemas::TableId;
use tributary_tests::{wait_until, Kafka, Running};

/// Makes module `end_to_end` of one test per sink kind and transport, each running
/// `scenario::<Backend>(kafka)` of the calling file:
/// `for_every_sink!(scenario, [postgres_embedded: Pg on false, ...])`.
#[allow(unused_macros)]
macro_rules! for_every_sink {
    ($scenario:ident, [$($test:ident: $backend:ident on $kafka:literal),* $(,)?]) => {
        /// The scenario for each sink kind and transport.
        mod end_to_end {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    super::$scenario::<super::$backend>($kafka).await
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use for_every_sink;

/// How long a scene waits for the sink to equal the source.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(180);

/// How many differing rows a failure shows of each side.
const SHOWN_ROWS: usize = 12;

/// How many characters of a value a failure shows.
const SHOWN_CHARS: usize = 120;

/// The name of the source in a scene's configuration.
pub const SOURCE: &str = "src";

/// The name of the sink in a scene's configuration.
pub const SINK: &str = "dst";

/// The transport a scene runs on.
pub enum Transport {
    /// The embedded log in the state directory.
    Embedded,
    /// A private tansu broker.
    Kafka(Kafka),
}

impl Transport {
    /// Starts a broker when `kafka`.
    pub async fn start(kafka: bool) -> anyhow::Result<Self> {
        Ok(if kafka {
            Transport::Kafka(Kafka::start().await?)
        } else {
            Transport::Embedded
        })
    }

    /// The `[transport]` section of a configuration.
    pub fn toml(&self) -> String {
        match self {
            Transport::Embedded => "[transport]\nkind = \"embedded\"\n".into(),
            Transport::Kafka(k) => format!(
                "[transport]\nkind = \"kafka\"\nbrokers = \"{}\"\n",
                k.bootstrap()
            ),
        }
    }

    /// The broker (scenarios that run on one only).
    pub fn kafka(&self) -> &Kafka {
        match self {
            Transport::Kafka(kafka) => kafka,
            Transport::Embedded => panic!("this scene runs on the embedded log"),
        }
    }
}

/// A source table and the sink's copy of it.
pub struct Pair {
    /// The database of the source table.
    pub source_db: String,
    /// The source table.
    pub source: TableId,
    /// Where the sink writes it.
    pub sink: TableId,
}

/// A source server of kind `S` with database `src`, a sink server of kind `B` with
/// database `dst`, a transport and a state directory: what every scenario starts from.
pub struct Scene<S: Backend, B: Backend> {
    /// The source's server.
    pub source: S,
    /// The source database.
    pub src: String,
    /// The sink's server.
    pub sink: B,
    /// The sink database.
    pub dst: String,
    /// The transport.
    pub transport: Transport,
    /// Source [`SOURCE`] from `src` to sink [`SINK`] into `dst`.
    pub config: Config,
    _state: tempfile::TempDir,
}

impl<S: Backend, B: Backend> Scene<S, B> {
    /// Starts the servers (and a broker when `kafka`), runs `ddl` in the source database,
    /// and configures the source with the TOML lines `settings` gives for its database.
    pub async fn new(
        kafka: bool,
        ddl: &str,
        settings: impl FnOnce(&str) -> String,
    ) -> anyhow::Result<Self> {
        // RUST_LOG=info shows what capture and pipeline do (nextest prints it on failure).
        tributary_tests::init_tracing();
        let source = S::start().await?;
        let sink = B::start().await?;
        let transport = Transport::start(kafka).await?;
        let src = source.create_database("src").await?;
        source.execute(&src, ddl).await?;
        let dst = sink.create_database("dst").await?;
        let state = tempfile::tempdir()?;
        let text = format!(
            "state_dir = {:?}\n{}\n[sources.{SOURCE}]\nkind = \"{}\"\nurl = {:?}\nheartbeat_secs = 1\n{}\n\n[sinks.{SINK}]\nkind = \"{}\"\nurl = {:?}\n",
            state.path(),
            transport.toml(),
            S::SCHEME,
            source.url(&src),
            settings(&src),
            B::SCHEME,
            sink.url(&dst),
        );
        let config = Config::parse(&text, |_| None).map_err(anyhow::Error::msg)?;
        Ok(Scene {
            source,
            src,
            sink,
            dst,
            transport,
            config,
            _state: state,
        })
    }

    /// Starts capture and pipeline (and the registry endpoint when configured).
    pub fn start(&self) -> Running {
        Running::start(self.config.clone(), true)
    }

    /// Runs `sql` in the source database.
    pub async fn source_execute(&self, sql: &str) -> anyhow::Result<()> {
        self.source.execute(&self.src, sql).await
    }

    /// Source table `name` (of schema `public` in a PostgreSQL source) and its copy.
    pub fn pair(&self, name: &str) -> Pair {
        let source = self
            .source
            .table_in(&self.src, &TableId::new("public", name));
        Pair {
            source_db: self.src.clone(),
            sink: self.sink.table_in(&self.dst, &source),
            source,
        }
    }

    /// Every row of source table `name`, the source-kind expressions `exprs` of each.
    pub async fn source_rows(
        &self,
        name: &str,
        exprs: &[&str],
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let exprs: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
        self.source
            .rows(&self.src, &self.pair(name).source, &exprs)
            .await
    }

    /// Every row of the sink's copy of source table `name`, the sink-kind expressions
    /// `exprs` of each.
    pub async fn sink_rows(&self, name: &str, exprs: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
        let exprs: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
        self.sink
            .rows(&self.dst, &self.pair(name).sink, &exprs)
            .await
    }

    /// Waits until the sink's copy of each of `tables` holds the rows of the source in
    /// the source's columns (it may keep columns the source dropped).
    pub async fn converge(&self, tables: &[&str], running: &Running) -> anyhow::Result<()> {
        let pairs: Vec<Pair> = tables.iter().map(|t| self.pair(t)).collect();
        self.converge_pairs(&pairs, false, running).await
    }

    /// Waits until the sink's copy of each of `tables` is the source table: the same
    /// columns in the same order, holding the same rows.
    pub async fn converge_whole(&self, tables: &[&str], running: &Running) -> anyhow::Result<()> {
        let pairs: Vec<Pair> = tables.iter().map(|t| self.pair(t)).collect();
        self.converge_pairs(&pairs, true, running).await
    }

    /// Waits until the sink's copy of each of `pairs` holds the rows of its source table
    /// (and has its columns exactly when `whole`). Fails early when the pipeline stopped,
    /// and with the last difference on timeout.
    pub async fn converge_pairs(
        &self,
        pairs: &[Pair],
        whole: bool,
        running: &Running,
    ) -> anyhow::Result<()> {
        let last = std::sync::Mutex::new(String::new());
        let outcome = wait_until("sink equals source", CONVERGE_TIMEOUT, || async {
            anyhow::ensure!(!running.task.is_finished(), "the pipeline stopped");
            for pair in pairs {
                if let Some(difference) = self.difference(pair, whole).await? {
                    *last.lock().expect("not poisoned") = difference;
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await;
        if outcome.is_err() && running.task.is_finished() {
            anyhow::bail!("the pipeline stopped: {:?}", outcome);
        }
        outcome.with_context(|| format!("last difference: {}", last.lock().expect("not poisoned")))
    }

    /// How the sink's copy differs from the source table, if it does.
    async fn difference(&self, pair: &Pair, whole: bool) -> anyhow::Result<Option<String>> {
        let columns = self.source.columns(&pair.source_db, &pair.source).await?;
        anyhow::ensure!(
            !columns.is_empty(),
            "the source has no table {}",
            pair.source
        );
        let names: Vec<&str> = columns.iter().map(|c| c[0].as_str()).collect();
        let (want_exprs, have_exprs): (Vec<String>, Vec<String>) = columns
            .iter()
            .map(|c| B::compared(S::SCHEME, &c[0], &c[1]))
            .unzip();
        let mut want = self
            .source
            .rows(&pair.source_db, &pair.source, &want_exprs)
            .await?;
        let mut have = match self.sink.rows(&self.dst, &pair.sink, &have_exprs).await {
            Ok(rows) => rows,
            Err(e) => return Ok(Some(format!("{} cannot be read: {e:#}", pair.sink))),
        };
        if whole {
            let copy = self.sink.columns(&self.dst, &pair.sink).await?;
            let copied: Vec<&str> = copy.iter().map(|c| c[0].as_str()).collect();
            if copied != names {
                return Ok(Some(format!(
                    "{} has columns {copied:?}, the source {names:?}",
                    pair.sink
                )));
            }
        }
        // In a stable order: the two servers may collate differently.
        want.sort_unstable();
        have.sort_unstable();
        Ok((want != have).then(|| describe(pair, &names, &want, &have)))
    }
}

/// The rows only the source and only the sink have, of sorted `want` and `have`.
fn describe(pair: &Pair, names: &[&str], want: &[Vec<String>], have: &[Vec<String>]) -> String {
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    let (mut w, mut h) = (want.iter().peekable(), have.iter().peekable());
    loop {
        match (w.peek(), h.peek()) {
            (Some(a), Some(b)) if a == b => {
                w.next();
                h.next();
            }
            (Some(a), Some(b)) if a < b => missing.extend(w.next()),
            (Some(_), Some(_)) | (None, Some(_)) => extra.extend(h.next()),
            (Some(_), None) => missing.extend(w.next()),
            (None, None) => break,
        }
    }
    let show = |rows: &[&Vec<String>]| -> String {
        rows.iter()
            .take(SHOWN_ROWS)
            .map(|row| {
                let values: Vec<String> = row
                    .iter()
                    .map(|v| v.chars().take(SHOWN_CHARS).collect())
                    .collect();
                format!("  {}\n", values.join(" | "))
            })
            .collect()
    };
    format!(
        "{} ({} rows) against {} ({} rows), columns {names:?}\nonly in the source ({}):\n{}only in the sink ({}):\n{}",
        pair.source,
        want.len(),
        pair.sink,
        have.len(),
        missing.len(),
        show(&missing),
        extra.len(),
        show(&extra),
    )
}
