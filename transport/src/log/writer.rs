//! The embedded transport: one append-only file per topic in a local directory.
//!
//! Each record is framed as `[payload length u32 LE][CRC-32 of payload u32 LE][payload]`,
//! the payload being `[key length u32 LE, u32::MAX for no key][key][value]`. A record's
//! offset is the byte position of its frame, so offsets are stable and totally ordered.
//!
//! One process writes a directory at a time (an exclusive lock on `LOCK`). Appends are
//! group-committed: the writer thread drains what is queued, writes it, `fdatasync`s each
//! file it touched and only then resolves the deliveries, so an acknowledged record is on
//! disk. After a crash a torn last record is cut off when the writer reopens the file.
//! Readers tail the files; a short record at the end is simply not written yet.

use crate::TransportError;
use crate::{Delivery, Producer, Record};
use async_trait::async_trait;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const HEADER: usize = 8;
/// Largest record accepted, so a damaged length cannot make a reader allocate gigabytes.
const MAX_RECORD: u32 = 256 * 1024 * 1024;
/// Batches queued for the writer (of up to 256 records each, from a publisher).
const QUEUED_BATCHES: usize = 16;
/// Bytes written before the writer syncs even if more records are queued.
const GROUP_BYTES: usize = 8 * 1024 * 1024;

/// Path of a topic's file in a log directory.
pub fn topic_path(dir: &Path, topic: &str) -> PathBuf {
    dir.join(format!("{topic}.log"))
}

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Offset of the record.
    pub offset: u64,
    /// Offset of the record after it.
    pub next_offset: u64,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub value: Vec<u8>,
}

fn encode(record: &Record) -> Vec<u8> {
    let key_len = record.key.as_ref().map_or(0, Vec::len);
    let mut payload = Vec::with_capacity(4 + key_len + record.value.len());
    match &record.key {
        Some(k) => {
            payload.extend_from_slice(&(k.len() as u32).to_le_bytes());
            payload.extend_from_slice(k);
        }
        None => payload.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    payload.extend_from_slice(&record.value);
    let mut framed = Vec::with_capacity(HEADER + payload.len());
    framed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    framed.extend_from_slice(&payload);
    framed
}

/// Outcome of reading at an offset.
enum Frame {
    Record(LogRecord),
    /// Nothing complete there yet.
    Incomplete,
    /// A complete frame whose checksum or layout is wrong.
    Damaged(String),
}

fn read_at(reader: &mut BufReader<File>, offset: u64) -> std::io::Result<Frame> {
    let mut header = [0u8; HEADER];
    if !read_full(reader, &mut header)? {
        return Ok(Frame::Incomplete);
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if !(4..=MAX_RECORD).contains(&len) {
        return Ok(Frame::Damaged(format!("record length {len} is impossible")));
    }
    let mut payload = vec![0u8; len as usize];
    if !read_full(reader, &mut payload)? {
        return Ok(Frame::Incomplete);
    }
    if crc32fast::hash(&payload) != crc {
        return Ok(Frame::Damaged("checksum mismatch".into()));
    }
    let key_len = u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes"));
    let (key, value_start) = if key_len == u32::MAX {
        (None, 4)
    } else if 4 + key_len as usize <= payload.len() {
        (
            Some(payload[4..4 + key_len as usize].to_vec()),
            4 + key_len as usize,
        )
    } else {
        return Ok(Frame::Damaged(format!(
            "key length {key_len} exceeds the record"
        )));
    };
    Ok(Frame::Record(LogRecord {
        offset,
        next_offset: offset + HEADER as u64 + len as u64,
        key,
        value: payload[value_start..].to_vec(),
    }))
}

/// Fills `buf`; false when the file ends first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(true)
}

/// Tails one topic file from an offset.
pub struct LogReader {
    path: PathBuf,
    reader: Option<BufReader<File>>,
    offset: u64,
    damaged_reads: u32,
}

impl LogReader {
    /// A reader of `topic` in `dir` starting at `offset` (0 for the beginning).
    pub fn new(dir: &Path, topic: &str, offset: u64) -> Self {
        LogReader {
            path: topic_path(dir, topic),
            reader: None,
            offset,
            damaged_reads: 0,
        }
    }

    /// The next record, or `None` if none is complete yet.
    pub fn try_next(&mut self) -> Result<Option<LogRecord>, TransportError> {
        if self.reader.is_none() {
            match File::open(&self.path) {
                Ok(f) => {
                    let mut r = BufReader::with_capacity(1 << 20, f);
                    r.seek(SeekFrom::Start(self.offset))
                        .map_err(|e| TransportError::log(&self.path, e))?;
                    self.reader = Some(r);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(TransportError::log(&self.path, e)),
            }
        }
        let reader = self.reader.as_mut().expect("opened above");
        match read_at(reader, self.offset).map_err(|e| TransportError::log(&self.path, e))? {
            Frame::Record(r) => {
                self.offset = r.next_offset;
                self.damaged_reads = 0;
                Ok(Some(r))
            }
            Frame::Incomplete => {
                // Rewind so the next attempt rereads the frame once it is complete.
                reader
                    .seek(SeekFrom::Start(self.offset))
                    .map_err(|e| TransportError::log(&self.path, e))?;
                Ok(None)
            }
            Frame::Damaged(message) => {
                // A writer that crashed mid-record and restarted rewrites the tail; give it
                // a few reads before calling the record corrupt.
                self.damaged_reads += 1;
                reader
                    .seek(SeekFrom::Start(self.offset))
                    .map_err(|e| TransportError::log(&self.path, e))?;
                if self.damaged_reads > 20 {
                    return Err(TransportError::Corrupt {
                        path: self.path.display().to_string(),
                        offset: self.offset,
                        message,
                    });
                }
                Ok(None)
            }
        }
    }
}

/// Scans a topic file and cuts off a torn or damaged tail; returns the end offset.
fn recover(path: &Path) -> Result<u64, TransportError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(TransportError::log(path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| TransportError::log(path, e))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0;
    while let Frame::Record(r) =
        read_at(&mut reader, offset).map_err(|e| TransportError::log(path, e))?
    {
        offset = r.next_offset;
    }
    if offset < len {
        tracing::warn!(path = %path.display(), valid = offset, len, "cutting torn tail off embedded log");
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| TransportError::log(path, e))?;
        f.set_len(offset)
            .map_err(|e| TransportError::log(path, e))?;
        f.sync_all().map_err(|e| TransportError::log(path, e))?;
    }
    Ok(offset)
}

/// One batch of records, resolved together.
struct Append {
    /// `(topic, framed record)` in order.
    records: Vec<(Arc<str>, Vec<u8>)>,
    done: oneshot::Sender<Result<(), TransportError>>,
}

/// Appends records to the files of a log directory; the single writer of that directory.
///
/// The directory's `LOCK` is held by the writer thread, which outlives the producer until
/// it has written every batch queued: a producer opened again in the same process (a run
/// restarted) waits for it ([`EmbeddedProducer::open_when_free`]) instead of cutting, as
/// a torn tail, a record the old thread is still writing.
pub struct EmbeddedProducer {
    tx: mpsc::Sender<Append>,
}

impl EmbeddedProducer {
    /// Opens (creating) the log directory and takes its writer lock; an error when another
    /// writer holds it.
    pub fn open(dir: &Path) -> Result<Self, TransportError> {
        Self::try_open(dir)?.ok_or_else(|| busy(dir))
    }

    /// [`EmbeddedProducer::open`], waiting up to `patience` for the writer lock (the last
    /// writes of a producer of this process just dropped).
    pub async fn open_when_free(dir: &Path, patience: Duration) -> Result<Self, TransportError> {
        let started = std::time::Instant::now();
        loop {
            if let Some(producer) = Self::try_open(dir)? {
                return Ok(producer);
            }
            if started.elapsed() >= patience {
                return Err(busy(dir));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens the log for writing, or `None` when its lock is held.
    fn try_open(dir: &Path) -> Result<Option<Self>, TransportError> {
        std::fs::create_dir_all(dir).map_err(|e| TransportError::log(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| TransportError::log(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(TransportError::log(&lock_path, e)),
        }
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("embedded-log-writer".into())
            .spawn(move || write_loop(dir, rx, lock))
            .map_err(|e| TransportError::log(&lock_path, e))?;
        Ok(Some(EmbeddedProducer { tx }))
    }
}

fn busy(dir: &Path) -> TransportError {
    TransportError::log(
        dir,
        "another process is writing this embedded log (its LOCK is held); run one capture per log directory",
    )
}

/// Writes queued batches until every producer handle is gone and the queue is empty,
/// holding the directory's `lock` (released when this returns).
fn write_loop(dir: PathBuf, mut rx: mpsc::Receiver<Append>, _lock: File) {
    let mut files: HashMap<String, BufWriter<File>> = HashMap::new();
    while let Some(first) = rx.blocking_recv() {
        let size = |a: &Append| a.records.iter().map(|(_, f)| f.len()).sum::<usize>();
        let mut bytes = size(&first);
        let mut batch = vec![first];
        while bytes < GROUP_BYTES {
            match rx.try_recv() {
                Ok(a) => {
                    bytes += size(&a);
                    batch.push(a);
                }
                Err(_) => break,
            }
        }
        let result = append_batch(&dir, &mut files, &batch);
        for a in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(TransportError::Log {
                    path: dir.display().to_string(),
                    message: e.to_string(),
                }),
            };
            let _ = a.done.send(r);
        }
        if result.is_err() {
            // Forget open files: the next append recovers each file from disk.
            files.clear();
        }
    }
}

fn append_batch(
    dir: &Path,
    files: &mut HashMap<String, BufWriter<File>>,
    batch: &[Append],
) -> Result<(), TransportError> {
    let mut touched: Vec<&str> = Vec::new();
    for (topic, framed) in batch.iter().flat_map(|a| &a.records) {
        if !files.contains_key(&**topic) {
            let path = topic_path(dir, topic);
            let end = recover(&path)?;
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| TransportError::log(&path, e))?;
            f.seek(SeekFrom::Start(end))
                .map_err(|e| TransportError::log(&path, e))?;
            files.insert(topic.to_string(), BufWriter::with_capacity(1 << 20, f));
        }
        let w = files.get_mut(&**topic).expect("inserted above");
        w.write_all(framed)
            .map_err(|e| TransportError::log(&topic_path(dir, topic), e))?;
        if !touched.contains(&&**topic) {
            touched.push(topic);
        }
    }
    for topic in touched {
        let w = files.get_mut(topic).expect("written above");
        let path = topic_path(dir, topic);
        w.flush().map_err(|e| TransportError::log(&path, e))?;
        w.get_ref()
            .sync_data()
            .map_err(|e| TransportError::log(&path, e))?;
    }
    Ok(())
}

#[async_trait]
impl Producer for EmbeddedProducer {
    async fn ensure_topics(&self, _topics: &[String]) -> Result<(), TransportError> {
        Ok(())
    }

    async fn send_batch(&self, records: Vec<Record>) -> Result<Delivery, TransportError> {
        let (done, rx) = oneshot::channel();
        let append = Append {
            records: records
                .into_iter()
                .map(|r| {
                    let framed = encode(&r);
                    (r.topic, framed)
                })
                .collect(),
            done,
        };
        self.tx
            .send(append)
            .await
            .map_err(|_| TransportError::Closed)?;
        Ok(Box::pin(async move {
            rx.await.map_err(|_| TransportError::Closed)?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(topic: &str, key: Option<&[u8]>, value: &[u8]) -> Record {
        Record {
            topic: topic.into(),
            key: key.map(<[u8]>::to_vec),
            value: value.to_vec(),
        }
    }

    #[tokio::test]
    async fn appended_records_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let producer = EmbeddedProducer::open(dir.path()).unwrap();
        let mut deliveries = Vec::new();
        for i in 0..100u32 {
            let key = i.to_le_bytes();
            let d = producer
                .send(rec(
                    "t",
                    (i % 2 == 0).then_some(&key[..]),
                    format!("v{i}").as_bytes(),
                ))
                .await
                .unwrap();
            deliveries.push(d);
        }
        for d in deliveries {
            d.await.unwrap();
        }
        let mut reader = LogReader::new(dir.path(), "t", 0);
        for i in 0..100u32 {
            let r = reader.try_next().unwrap().expect("record present");
            assert_eq!(r.value, format!("v{i}").into_bytes());
            assert_eq!(r.key.is_some(), i % 2 == 0);
        }
        assert!(reader.try_next().unwrap().is_none());
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_writer_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let producer = EmbeddedProducer::open(dir.path()).unwrap();
            assert!(EmbeddedProducer::open(dir.path()).is_err());
            producer
                .send(rec("t", None, b"one"))
                .await
                .unwrap()
                .await
                .unwrap();
        }
        // Simulate a crash in the middle of the second record.
        let path = topic_path(dir.path(), "t");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&encode(&rec("t", None, b"two"))[..6]).unwrap();
        drop(f);
        // The first writer's thread lets the lock go once it is done.
        let producer = EmbeddedProducer::open_when_free(dir.path(), Duration::from_secs(30))
            .await
            .unwrap();
        producer
            .send(rec("t", None, b"three"))
            .await
            .unwrap()
            .await
            .unwrap();
        let mut reader = LogReader::new(dir.path(), "t", 0);
        assert_eq!(reader.try_next().unwrap().unwrap().value, b"one");
        assert_eq!(reader.try_next().unwrap().unwrap().value, b"three");
        assert!(reader.try_next().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_producer_opened_again_waits_for_the_last_writes_of_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let producer = EmbeddedProducer::open(dir.path()).unwrap();
        let mut acks = Vec::new();
        for i in 0..2000u32 {
            let value = format!("v{i:04}").repeat(64);
            acks.push(
                producer
                    .send(rec("t", None, value.as_bytes()))
                    .await
                    .unwrap(),
            );
        }
        drop(producer);
        // The old writer may still be writing what was queued; the new one waits for it.
        let again = EmbeddedProducer::open_when_free(dir.path(), Duration::from_secs(30))
            .await
            .unwrap();
        again
            .send(rec("t", None, b"after"))
            .await
            .unwrap()
            .await
            .unwrap();
        for ack in acks {
            ack.await.unwrap();
        }
        let mut reader = LogReader::new(dir.path(), "t", 0);
        for i in 0..2000u32 {
            let r = reader.try_next().unwrap().expect("record present");
            assert_eq!(r.value, format!("v{i:04}").repeat(64).into_bytes());
        }
        assert_eq!(reader.try_next().unwrap().unwrap().value, b"after");
        assert!(reader.try_next().unwrap().is_none());
        // Held, the lock makes a plain open fail and a patient one give up in time.
        let e = EmbeddedProducer::open_when_free(dir.path(), Duration::from_millis(50))
            .await
            .err()
            .expect("the lock is held");
        assert!(e.to_string().contains("LOCK is held"), "{e}");
    }

    #[test]
    fn flipped_byte_is_reported_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = topic_path(dir.path(), "t");
        let mut bytes = encode(&rec("t", None, b"payload"));
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        bytes.extend(encode(&rec("t", None, b"next")));
        std::fs::write(&path, bytes).unwrap();
        let mut reader = LogReader::new(dir.path(), "t", 0);
        let err = loop {
            match reader.try_next() {
                Ok(None) => continue,
                Ok(Some(r)) => panic!("read damaged record {r:?}"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }
}
