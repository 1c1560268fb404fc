//! Avro object container files (the Avro specification's "Object Container Files"), with
//! the `zstandard` codec: the format archive segments are stored in, so any Avro tool
//! (`avro-tools tojson`, Python's `fastavro`, Spark) reads them.
//!
//! The container is written here rather than with `apache_avro::Writer` because the
//! datums are already encoded (by `tributary_schemas::avro::encode_value`, which is
//! several times faster than building `apache_avro` values) and that writer takes only
//! values. The framing is small: a header (magic, metadata map, sync marker), then
//! blocks of (datum count, byte length, zstd-compressed datums, sync marker). Tests read
//! the files back with `apache_avro::Reader`.

use std::collections::BTreeMap;
use std::io::Read;

/// The four bytes every container starts with.
const MAGIC: &[u8; 4] = b"Obj\x01";

/// A 16-byte sync marker, chosen at random per file.
pub type Sync = [u8; 16];

/// A fresh random sync marker.
pub fn new_sync() -> Sync {
    rand::random()
}

/// A container that cannot be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OcfError(pub String);

fn err(message: impl Into<String>) -> OcfError {
    OcfError(message.into())
}

/// Appends Avro's zig-zag variable-length encoding of `v`.
pub fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads one zig-zag long from the front of `input`.
pub fn take_long(input: &mut &[u8]) -> Result<i64, OcfError> {
    read_long(input)?.ok_or_else(|| err("truncated number"))
}

/// Reads one zig-zag long from `input`; `None` when `input` ends before its first byte.
fn read_long(input: &mut impl Read) -> Result<Option<i64>, OcfError> {
    let mut n: u64 = 0;
    for (i, shift) in (0..64).step_by(7).enumerate() {
        let mut b = [0u8];
        if let Err(e) = input.read_exact(&mut b) {
            return match (i, e.kind()) {
                (0, std::io::ErrorKind::UnexpectedEof) => Ok(None),
                (_, std::io::ErrorKind::UnexpectedEof) => Err(err("truncated number")),
                _ => Err(err(format!("reading: {e}"))),
            };
        }
        n |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(Some(((n >> 1) as i64) ^ -((n & 1) as i64)));
        }
    }
    Err(err("number longer than 10 bytes"))
}

/// Reads a length and that many bytes (`what`, for messages) from `input`; memory grows
/// with the bytes actually there, whatever length a damaged file claims.
fn read_bytes(input: &mut impl Read, what: &str) -> Result<Vec<u8>, OcfError> {
    let len = read_long(input)?.ok_or_else(|| err(format!("truncated length of {what}")))?;
    let len = u64::try_from(len).map_err(|_| err(format!("negative length of {what}")))?;
    let mut value = Vec::new();
    input
        .take(len)
        .read_to_end(&mut value)
        .map_err(|e| err(format!("reading {what}: {e}")))?;
    if (value.len() as u64) < len {
        return Err(err(format!(
            "{what} of {len} bytes runs past the end ({} left)",
            value.len()
        )));
    }
    Ok(value)
}

/// Reads the 16-byte sync marker that ends the header and every block (`what`).
fn read_sync(input: &mut impl Read, what: &str) -> Result<Sync, OcfError> {
    let mut sync: Sync = [0; 16];
    input.read_exact(&mut sync).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => err(format!("{what} ends before its sync marker")),
        _ => err(format!("reading: {e}")),
    })?;
    Ok(sync)
}

/// The container header: `schema` (JSON text), codec `zstandard`, `metadata` (under the
/// caller's own keys) and the sync marker.
pub fn header(schema: &str, metadata: &BTreeMap<String, String>, sync: &Sync) -> Vec<u8> {
    let mut out = Vec::with_capacity(schema.len() + 256);
    out.extend_from_slice(MAGIC);
    let mut entries: Vec<(&str, &[u8])> = vec![
        ("avro.schema", schema.as_bytes()),
        ("avro.codec", b"zstandard"),
    ];
    entries.extend(metadata.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    put_long(&mut out, entries.len() as i64);
    for (k, v) in entries {
        put_long(&mut out, k.len() as i64);
        out.extend_from_slice(k.as_bytes());
        put_long(&mut out, v.len() as i64);
        out.extend_from_slice(v);
    }
    put_long(&mut out, 0);
    out.extend_from_slice(sync);
    out
}

/// One data block of `count` datums (their encodings concatenated in `datums`),
/// compressed at `level`.
pub fn block(datums: &[u8], count: u64, level: i32, sync: &Sync) -> Result<Vec<u8>, OcfError> {
    let data = zstd::bulk::compress(datums, level).map_err(|e| err(format!("zstd: {e}")))?;
    let mut out = Vec::with_capacity(data.len() + 32);
    put_long(&mut out, count as i64);
    put_long(&mut out, data.len() as i64);
    out.extend_from_slice(&data);
    out.extend_from_slice(sync);
    Ok(out)
}

/// A container read back from `R` (a byte slice, a file): its schema text and metadata;
/// its blocks are read one at a time ([`Container::next_block`]).
#[derive(Debug)]
pub struct Container<R> {
    /// `avro.schema`.
    pub schema: String,
    /// Every metadata entry but `avro.schema` and `avro.codec`.
    pub metadata: BTreeMap<String, String>,
    sync: Sync,
    input: R,
}

/// Opens the container `input` holds, reading its header; only the `zstandard` codec is
/// read.
pub fn open<R: Read>(mut input: R) -> Result<Container<R>, OcfError> {
    let mut magic = [0u8; 4];
    if input.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Err(err("not an Avro object container file (bad magic)"));
    }
    let mut schema = None;
    let mut codec = "null".to_string();
    let mut metadata = BTreeMap::new();
    loop {
        let mut n = read_long(&mut input)?.ok_or_else(|| err("truncated header"))?;
        if n == 0 {
            break;
        }
        if n < 0 {
            // A negative count is followed by the block's byte size.
            read_long(&mut input)?;
            n = -n;
        }
        for _ in 0..n {
            let key = read_bytes(&mut input, "metadata key")?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let value = read_bytes(&mut input, "metadata value")?;
            let value = String::from_utf8_lossy(&value).into_owned();
            match key.as_str() {
                "avro.schema" => schema = Some(value),
                "avro.codec" => codec = value,
                _ => {
                    metadata.insert(key, value);
                }
            }
        }
    }
    if codec != "zstandard" && codec != "null" {
        return Err(err(format!("codec {codec:?} is not supported")));
    }
    let schema = schema.ok_or_else(|| err("the header has no avro.schema"))?;
    let sync = read_sync(&mut input, "the header")?;
    if codec == "null" {
        return Err(err("codec null is not what Tributary writes"));
    }
    Ok(Container {
        schema,
        metadata,
        sync,
        input,
    })
}

impl<R: Read> Container<R> {
    /// The next block, decompressed: its datum count and datums; `None` at the end.
    pub fn next_block(&mut self) -> Result<Option<(u64, Vec<u8>)>, OcfError> {
        let Some(count) = read_long(&mut self.input)? else {
            return Ok(None);
        };
        let count = u64::try_from(count).map_err(|_| err("negative datum count"))?;
        let data = read_bytes(&mut self.input, "block")?;
        if read_sync(&mut self.input, "a block")? != self.sync {
            return Err(err("a block does not end with the file's sync marker"));
        }
        let datums =
            zstd::stream::decode_all(data.as_slice()).map_err(|e| err(format!("zstd: {e}")))?;
        Ok(Some((count, datums)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    #[test]
    fn longs_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_long(&mut out, v);
            let mut input = out.as_slice();
            assert_eq!(take_long(&mut input).unwrap(), v);
            assert!(input.is_empty());
        }
    }

    #[test]
    fn apache_avro_reads_what_is_written_and_we_read_it_back() {
        let schema_text = r#"{"type":"record","name":"R","fields":[{"name":"n","type":"long"},{"name":"s","type":"string"}]}"#;
        let schema = apache_avro::Schema::parse_str(schema_text).unwrap();
        let sync = new_sync();
        let meta = BTreeMap::from([("tributary.source".to_string(), "hq".to_string())]);
        let mut file = header(schema_text, &meta, &sync);
        let mut expected = Vec::new();
        for b in 0..3 {
            let mut datums = Vec::new();
            for i in 0..100 {
                let n = b * 100 + i;
                let s = format!("row {n}");
                datums.extend(
                    apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
                        .build()
                        .unwrap()
                        .write_value_to_vec(Value::Record(vec![
                            ("n".into(), Value::Long(n)),
                            ("s".into(), Value::String(s.clone())),
                        ]))
                        .unwrap(),
                );
                expected.push((n, s));
            }
            file.extend(block(&datums, 100, 3, &sync).unwrap());
        }
        let reader = apache_avro::Reader::new(file.as_slice()).unwrap();
        assert_eq!(
            reader
                .user_metadata()
                .get("tributary.source")
                .map(Vec::as_slice),
            Some(&b"hq"[..])
        );
        let read: Vec<(i64, String)> = reader
            .map(|v| match v.unwrap() {
                Value::Record(f) => match (&f[0].1, &f[1].1) {
                    (Value::Long(n), Value::String(s)) => (*n, s.clone()),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(read, expected);

        let mut c = open(file.as_slice()).unwrap();
        assert_eq!(c.schema, schema_text);
        assert_eq!(c.metadata["tributary.source"], "hq");
        let mut blocks = 0;
        while let Some((count, datums)) = c.next_block().unwrap() {
            assert_eq!(count, 100);
            assert!(!datums.is_empty());
            blocks += 1;
        }
        assert_eq!(blocks, 3);

        // Cut short inside the last block: named, not taken for the end.
        let mut c = open(&file[..file.len() - 20]).unwrap();
        let outcome = std::iter::from_fn(|| c.next_block().transpose()).last();
        let message = outcome.unwrap().unwrap_err().to_string();
        assert!(message.contains("runs past the end"), "{message}");

        // A flipped byte in a sync marker is found.
        let at = file.len() - 5;
        file[at] ^= 0xff;
        let mut c = open(std::io::Cursor::new(&file)).unwrap();
        let mut failed = false;
        while !failed {
            match c.next_block() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => failed = true,
            }
        }
        assert!(failed, "a corrupted block went unnoticed");
    }
}
