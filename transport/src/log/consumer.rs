//! Readers over the embedded log; offsets in a JSON file per consumer group.
//!
//! The offsets file is replaced atomically (write, fsync, rename), so a crash leaves
//! either the old or the new offsets, both safe: the sink's watermark skips replays. Each
//! write goes through a temporary file of its own: a write still finishing on a blocking
//! thread after its run stopped (a run restarted in the same process) must not take the
//! temporary file of the next run's write from under it.

use super::LogReader;
use crate::TransportError;
use crate::{Consumed, Consumer, TopicReader};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a reader at the end of a file looks for new records.
const POLL: Duration = Duration::from_millis(10);

/// A consumer group over an embedded log directory.
pub struct EmbeddedConsumer {
    dir: PathBuf,
    offsets_path: PathBuf,
    offsets: Mutex<BTreeMap<String, u64>>,
}

impl EmbeddedConsumer {
    /// Opens group `group` on the log in `dir`.
    pub fn open(dir: &Path, group: &str) -> Result<Self, TransportError> {
        let offsets_dir = dir.join("consumers");
        std::fs::create_dir_all(&offsets_dir).map_err(|e| log_err(&offsets_dir, e))?;
        let offsets_path = offsets_dir.join(format!("{group}.json"));
        // Temporary files a crashed process left behind (this process's own may belong to
        // a write still finishing).
        let stale = format!("{group}.json.");
        let own = format!("{group}.json.{}-", std::process::id());
        for entry in std::fs::read_dir(&offsets_dir).map_err(|e| log_err(&offsets_dir, e))? {
            let entry = entry.map_err(|e| log_err(&offsets_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&stale) && name.ends_with(".tmp") && !name.starts_with(&own) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let offsets = match std::fs::read(&offsets_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| log_err(&offsets_path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(log_err(&offsets_path, e)),
        };
        Ok(EmbeddedConsumer {
            dir: dir.to_path_buf(),
            offsets_path,
            offsets: Mutex::new(offsets),
        })
    }
}

fn log_err(path: &Path, e: impl std::fmt::Display) -> TransportError {
    TransportError::Log {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

struct EmbeddedReader {
    topic: String,
    reader: LogReader,
}

#[async_trait]
impl TopicReader for EmbeddedReader {
    async fn next(&mut self, wait: Option<Duration>) -> Result<Option<Consumed>, TransportError> {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            if let Some(r) = self.reader.try_next()? {
                return Ok(Some(Consumed {
                    topic: self.topic.clone(),
                    offset: r.offset,
                    next_offset: r.next_offset,
                    key: r.key,
                    value: r.value,
                }));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn reader(&self, topic: &str) -> Result<Box<dyn TopicReader>, TransportError> {
        let offset = self
            .offsets
            .lock()
            .expect("not poisoned")
            .get(topic)
            .copied()
            .unwrap_or(0);
        Ok(Box::new(EmbeddedReader {
            topic: topic.to_string(),
            reader: LogReader::new(&self.dir, topic, offset),
        }))
    }

    async fn reader_from_start(&self, topic: &str) -> Result<Box<dyn TopicReader>, TransportError> {
        Ok(Box::new(EmbeddedReader {
            topic: topic.to_string(),
            reader: LogReader::new(&self.dir, topic, 0),
        }))
    }

    async fn commit(&self, offsets: &[(String, u64)]) -> Result<(), TransportError> {
        let snapshot = {
            let mut current = self.offsets.lock().expect("not poisoned");
            for (topic, offset) in offsets {
                current.insert(topic.clone(), *offset);
            }
            current.clone()
        };
        let path = self.offsets_path.clone();
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension(format!("json.{}-{n}.tmp", std::process::id()));
            let mut f = std::fs::File::create(&tmp).map_err(|e| log_err(&tmp, e))?;
            f.write_all(&serde_json::to_vec(&snapshot).expect("offsets serialise"))
                .map_err(|e| log_err(&tmp, e))?;
            f.sync_data().map_err(|e| log_err(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| log_err(&path, e))
        })
        .await
        .map_err(|e| log_err(&self.offsets_path, e))?
    }
}
