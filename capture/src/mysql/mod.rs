//! MySQL/MariaDB capture from the binary log (ROW format).
//!
//! Start-up checks the server (`log_bin`, `binlog_format = ROW`, `binlog_row_image = FULL`,
//! the rights to read binlog coordinates) and loads the captured tables from
//! `information_schema`; every one needs a primary key. The initial snapshot copies the
//! tables in primary-key chunks from a binlog position and is resumable (see the
//! `snapshot` module); its rows are published as `Read` events at that position, then the
//! binlog is streamed from it.
//!
//! Streaming registers as a replica (`server_id`) and decodes TABLE_MAP and ROWS events
//! (v1 and v2) into change events; a transaction runs from its GTID (or `BEGIN`) event to
//! its XID (or `COMMIT`) event. A two-phase XA transaction's rows are held in the state
//! store from `XA START` to `XA PREPARE` (durable before the checkpoint passes the
//! prepare) and published as one transaction at its `XA COMMIT`, or dropped at its
//! `XA ROLLBACK`. The checkpoint (binlog file and offset of the next
//! transaction, and the GTID before it) is stored locally only once the transport holds
//! everything before it, so a crash resends rather than loses; sinks skip what they
//! already applied by position. Transactions touching no captured table move the
//! checkpoint too, and the server's heartbeats keep an idle connection checked.
//!
//! Table shapes come from `information_schema` when a table is first met and again after
//! any DDL statement in the binlog; each TABLE_MAP event is checked against that shape, and
//! where they differ the shape at that position is rebuilt from the event itself (see the
//! `binlog_shape` module). Without `binlog_row_metadata = FULL` the event has no names:
//! the one earlier shape of the table (each is kept in the state) that agrees with its
//! types is taken, and where none or several agree the capture stops with an error naming
//! the table and both shapes.
//!
//! The modules follow that order: `catalog` (settings and table shapes), `snapshot` (the
//! initial copy, and the copies for backups and restore tests, read in primary-key
//! `chunk`s), `stream` (the binlog reader, one method per event kind, with
//! `stream/tables` for TABLE_MAP and ROWS events and `stream/xa` for two-phase
//! transactions), `checkpoint` (checkpoints that wait for the transport), `gtid`, and the
//! decoders (`rows`, `types`, `binlog_shape`, `compressed`, `statement`, `unread`).
//! [`MySqlCapture::run`] holds no logic of its own: it wires them together.

pub mod admin;
mod binlog_shape;
pub mod catalog;
mod checkpoint;
mod chunk;
mod compressed;
pub mod config;
mod gtid;
mod rows;
mod snapshot;
mod statement;
mod stream;
pub mod types;
mod unread;

pub use config::{MySqlSourceConfig, ResumeFrom};
pub use snapshot::{copy_tables, ConsistentCopy};
pub use stream::file_seq;

use crate::error::CaptureError;
use crate::publisher::Publisher;
use crate::state::StateStore;
use catalog::{connect, load_tables, preflight};
use stream::BinlogReader;
use tokio::sync::watch;

/// Captures one MySQL or MariaDB server.
pub struct MySqlCapture {
    source: String,
    config: MySqlSourceConfig,
    store: StateStore,
    publisher: Publisher,
    /// The server's collations, read when a shape is first rebuilt from the binlog.
    collations: Option<binlog_shape::Collations>,
}

impl MySqlCapture {
    /// An agent for source `source`.
    pub fn new(
        source: &str,
        config: MySqlSourceConfig,
        store: StateStore,
        publisher: Publisher,
    ) -> Self {
        MySqlCapture {
            source: source.to_string(),
            config,
            store,
            publisher,
            collations: None,
        }
    }

    /// Runs until `shutdown` turns true or an error occurs: checks the server, takes (or
    /// finishes) the initial snapshot unless it is done, then streams the binlog from the
    /// stored checkpoint.
    pub async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), CaptureError> {
        let mut conn = connect(self.config.url.expose()).await?;
        preflight(&mut conn).await?;
        self.publisher.connected();
        let tables = load_tables(&mut conn, &self.config, &self.store, &self.source, None).await?;
        let checkpoint = self.stream_start(&tables).await?;
        drop(conn);
        let stream = stream::request(&self.config, &self.source, &checkpoint).await?;
        BinlogReader::new(self, checkpoint, tables)?
            .run(stream, &mut shutdown)
            .await
    }
}
