//! Where backups live: a local directory or an S3-compatible bucket, through the
//! `object_store` crate. Objects are named by `/`-separated paths under the store's root.
//!
//! Objects larger than `memory_object_bytes` (an archive segment holding one huge
//! transaction) never sit in memory whole: they are uploaded from a file in parts
//! ([`Store::put_file`], S3 multipart) and downloaded into a temporary file while their
//! sha256 is computed ([`Store::get_to_file`]).

use crate::config::BackupConfig;
use crate::crypt::Crypt;
use crate::error::BackupError;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use sha2::Digest;
use std::sync::Arc;

/// An opened store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Under this path inside the bucket (S3), or empty.
    prefix: String,
    describe: String,
    crypt: Crypt,
    /// Larger objects are moved in parts through files.
    memory_object_bytes: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl Store {
    /// Opens the store `config` names.
    pub fn open(config: &BackupConfig) -> Result<Store, BackupError> {
        let url = config.store.trim();
        if url.is_empty() {
            return Err(BackupError::Config(
                "backup.store is empty: give a directory or s3://bucket/prefix".into(),
            ));
        }
        let crypt = Crypt::load(
            config.age_identity_file.as_deref(),
            config.age_passphrase_env.as_deref(),
        )?;
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BackupError::Config(format!(
                    "backup.store {url:?}: no bucket after s3://"
                )));
            }
            let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
            let key = config
                .s3_access_key_id
                .clone()
                .or_else(|| env("AWS_ACCESS_KEY_ID"))
                .ok_or_else(|| {
                    BackupError::Config(format!(
                        "backup.store {url:?}: no access key: set backup.s3_access_key_id or AWS_ACCESS_KEY_ID"
                    ))
                })?;
            let secret = config
                .s3_secret_access_key
                .as_ref()
                .map(|s| s.expose().to_string())
                .or_else(|| env("AWS_SECRET_ACCESS_KEY"))
                .ok_or_else(|| {
                    BackupError::Config(format!(
                        "backup.store {url:?}: no secret key: set backup.s3_secret_access_key (as ${{ENV}}) or AWS_SECRET_ACCESS_KEY"
                    ))
                })?;
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(config.s3_region.as_deref().unwrap_or("us-east-1"))
                .with_access_key_id(key)
                .with_secret_access_key(secret);
            if let Some(endpoint) = &config.s3_endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            let s3 = builder
                .build()
                .map_err(|e| BackupError::Config(format!("backup.store {url:?}: {e}")))?;
            return Ok(Store {
                inner: Arc::new(s3),
                prefix: prefix.trim_matches('/').to_string(),
                describe: url.to_string(),
                crypt,
                memory_object_bytes: config.memory_object_bytes,
            });
        }
        let dir = std::path::Path::new(url);
        std::fs::create_dir_all(dir).map_err(|e| {
            BackupError::Config(format!(
                "backup.store {url:?}: cannot create the directory: {e}"
            ))
        })?;
        let local = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| BackupError::Config(format!("backup.store {url:?}: {e}")))?;
        Ok(Store {
            inner: Arc::new(local),
            prefix: String::new(),
            describe: url.to_string(),
            crypt,
            memory_object_bytes: config.memory_object_bytes,
        })
    }

    /// A data object as it is to be stored: encrypted when encryption is configured.
    pub fn seal(&self, plain: Vec<u8>) -> Result<Vec<u8>, BackupError> {
        self.crypt.seal(plain)
    }

    /// Data object `name` as stored, decrypted.
    pub fn unseal(&self, name: &str, stored: &[u8]) -> Result<Vec<u8>, BackupError> {
        self.crypt.open(&self.describe, name, stored)
    }

    /// A writer storing what is written to it into `out` as a data object is stored:
    /// encrypted when encryption is configured.
    pub fn seal_to<W: std::io::Write>(
        &self,
        out: W,
    ) -> Result<crate::crypt::SealWriter<W>, BackupError> {
        self.crypt.seal_to(out)
    }

    /// Data object `name` as stored in file `stored`, decrypted into a new temporary file
    /// a piece at a time (on a blocking thread); a plain object's file comes back as is.
    pub async fn unseal_file(
        &self,
        name: &str,
        stored: tempfile::TempPath,
    ) -> Result<tempfile::TempPath, BackupError> {
        let (crypt, describe, name) = (self.crypt.clone(), self.describe.clone(), name.to_string());
        tokio::task::spawn_blocking(move || crypt.open_file(&describe, &name, stored))
            .await
            .map_err(|e| BackupError::Config(format!("decrypting: {e}")))?
    }

    /// Objects larger than this are moved in parts through files.
    pub fn memory_object_bytes(&self) -> u64 {
        self.memory_object_bytes
    }

    /// The store's description, for messages.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn path(&self, name: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        }
    }

    fn failed(&self, what: String, e: impl std::fmt::Display) -> BackupError {
        BackupError::Store {
            store: self.describe.clone(),
            what,
            message: e.to_string(),
        }
    }

    /// Writes `bytes` as object `name` (replacing it).
    pub async fn put(&self, name: &str, bytes: Bytes) -> Result<(), BackupError> {
        self.inner
            .put(&self.path(name), PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| self.failed(format!("writing {name}"), e))?;
        Ok(())
    }

    /// Writes file `path` as object `name` (replacing it): in one request when it is at
    /// most `memory_object_bytes`, otherwise in parts (S3 multipart; parts of 5 to 16 MiB,
    /// two in flight), reading the file a piece at a time.
    pub async fn put_file(&self, name: &str, path: &std::path::Path) -> Result<(), BackupError> {
        use std::io::Read;
        let local = |e: std::io::Error| self.failed(format!("reading {}", path.display()), e);
        let size = std::fs::metadata(path).map_err(local)?.len();
        if size <= self.memory_object_bytes {
            let bytes = std::fs::read(path).map_err(local)?;
            return self.put(name, bytes.into()).await;
        }
        let what = || format!("writing {name} in parts");
        let upload = self
            .inner
            .put_multipart(&self.path(name))
            .await
            .map_err(|e| self.failed(what(), e))?;
        let part = self.memory_object_bytes.clamp(5 << 20, 16 << 20) as usize;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, part);
        let mut file = std::fs::File::open(path).map_err(local)?;
        let mut buf = vec![0u8; 1 << 20];
        let written = async {
            loop {
                let n = file.read(&mut buf).map_err(local)?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(2)
                    .await
                    .map_err(|e| self.failed(what(), e))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        match written {
            Ok(()) => {
                writer.finish().await.map_err(|e| self.failed(what(), e))?;
                Ok(())
            }
            Err(e) => {
                // Parts already sent would otherwise linger (and be billed) on S3.
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(object = name, error = %abort, "aborting a multipart upload failed");
                }
                Err(e)
            }
        }
    }

    /// Reads object `name` into a new temporary file a piece at a time; `None` when there
    /// is none. Returns the file, the object's size and its sha256 (hex).
    pub async fn get_to_file(
        &self,
        name: &str,
    ) -> Result<Option<(tempfile::TempPath, u64, String)>, BackupError> {
        use std::io::Write;
        let what = || format!("reading {name}");
        let result = match self.inner.get(&self.path(name)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed(what(), e)),
        };
        let file = tempfile::NamedTempFile::new()
            .map_err(|e| self.failed(format!("{}: a temporary file", what()), e))?;
        let local = |e: std::io::Error| {
            self.failed(format!("{} into {}", what(), file.path().display()), e)
        };
        let mut out =
            HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file.as_file()));
        let mut stream = result.into_stream();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| self.failed(what(), e))?
        {
            out.write_all(&chunk).map_err(local)?;
        }
        let (mut written, size, sha256) = out.finish();
        written.flush().map_err(local)?;
        drop(written);
        Ok(Some((file.into_temp_path(), size, sha256)))
    }

    /// Reads object `name`; `None` when there is none.
    pub async fn get(&self, name: &str) -> Result<Option<Bytes>, BackupError> {
        match self.inner.get(&self.path(name)).await {
            Ok(r) => Ok(Some(
                r.bytes()
                    .await
                    .map_err(|e| self.failed(format!("reading {name}"), e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed(format!("reading {name}"), e)),
        }
    }

    /// Reads JSON object `name` (`what` it is, for messages); `None` when there is none.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        what: &str,
    ) -> Result<Option<T>, BackupError> {
        match self.get(name).await? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| BackupError::Corrupt {
                        store: self.describe.clone(),
                        object: name.to_string(),
                        message: format!("not {what}: {e}"),
                    })
            }
        }
    }

    /// Reads object `name`, which must exist.
    pub async fn get_required(&self, name: &str) -> Result<Bytes, BackupError> {
        self.get(name).await?.ok_or_else(|| BackupError::Corrupt {
            store: self.describe.clone(),
            object: name.to_string(),
            message: "missing".into(),
        })
    }

    /// Names and sizes of the objects under `prefix` (a directory-like path), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, BackupError> {
        let root = self.path(prefix.trim_end_matches('/'));
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out: Vec<(String, u64)> = self
            .inner
            .list(Some(&root))
            .map_ok(|m| {
                let name = m.location.to_string();
                (
                    name.strip_prefix(&strip).unwrap_or(&name).to_string(),
                    m.size,
                )
            })
            .try_collect()
            .await
            .map_err(|e| self.failed(format!("listing {prefix}"), e))?;
        out.sort();
        Ok(out)
    }

    /// Deletes object `name` (no error when it is gone already).
    pub async fn delete(&self, name: &str) -> Result<(), BackupError> {
        match self.inner.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(format!("deleting {name}"), e)),
        }
    }
}

/// A writer that counts and hashes (sha256) what goes through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    size: u64,
}

impl<W: std::io::Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: sha2::Sha256::new(),
            size: 0,
        }
    }

    /// The inner writer, the byte count and the sha256 (hex).
    pub(crate) fn finish(self) -> (W, u64, String) {
        (self.inner, self.size, hex::encode(self.hasher.finalize()))
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_objects_go_up_in_parts_and_come_down_into_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BackupConfig::at(dir.path().join("store").display().to_string());
        config.memory_object_bytes = 1 << 20;
        config.validate().unwrap();
        let store = Store::open(&config).unwrap();
        // 12 MiB: three parts of 5 MiB (the smallest S3 takes), the last one shorter.
        let data: Vec<u8> = (0..12u32 << 20).map(|i| (i % 251) as u8).collect();
        let small: Vec<u8> = data[..1000].to_vec();
        for (name, bytes) in [("big/object", &data), ("small/object", &small)] {
            let file = dir.path().join("upload");
            std::fs::write(&file, bytes).unwrap();
            store.put_file(name, &file).await.unwrap();
            let (path, size, sha) = store.get_to_file(name).await.unwrap().unwrap();
            assert_eq!(size, bytes.len() as u64, "{name}");
            assert_eq!(sha, hex::encode(sha2::Sha256::digest(bytes)), "{name}");
            assert_eq!(&std::fs::read(&path).unwrap(), bytes, "{name}");
        }
        assert!(store.get_to_file("none").await.unwrap().is_none());
        // A file that cannot be read names itself.
        let e = store
            .put_file("x", &dir.path().join("missing"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        config.memory_object_bytes = 1000;
        let e = config.validate().unwrap_err();
        assert!(e.contains("backup.memory_object_bytes"), "{e}");
    }
}
