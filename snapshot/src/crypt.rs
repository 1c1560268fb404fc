//! Optional encryption of stored data objects (archive segments and snapshot objects) in
//! the [age](https://age-encryption.org) format (the `age` crate), so `age -d -i key.txt`
//! decrypts any object by hand. The key is an age identity file (`age-keygen` output,
//! whose public keys the objects are encrypted to) or a passphrase read from an
//! environment variable; neither is ever written in the configuration.
//!
//! Checksums in manifests are of the stored (encrypted) bytes, so `verify` finds damage
//! before decrypting; a wrong key is reported as such, naming the object.

use crate::error::BackupError;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

/// How objects are encrypted, if at all.
#[derive(Clone, Default)]
pub enum Crypt {
    /// Stored as written.
    #[default]
    None,
    /// To the public keys of an identity file, decrypted with its secret keys.
    Keys {
        /// The identity file, for messages.
        file: PathBuf,
        /// Secret keys.
        identities: std::sync::Arc<Vec<age::x25519::Identity>>,
    },
    /// With a passphrase (scrypt).
    Passphrase {
        /// The environment variable it came from, for messages.
        env: String,
        /// The passphrase.
        passphrase: age::secrecy::SecretString,
    },
}

impl std::fmt::Debug for Crypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Crypt::None => f.write_str("none"),
            Crypt::Keys { file, .. } => write!(f, "age keys of {}", file.display()),
            Crypt::Passphrase { env, .. } => write!(f, "age passphrase from ${env}"),
        }
    }
}

/// Magic line every age file starts with.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";

impl Crypt {
    /// The encryption `key_file` or `passphrase_env` (at most one) asks for.
    pub fn load(
        key_file: Option<&std::path::Path>,
        passphrase_env: Option<&str>,
    ) -> Result<Crypt, BackupError> {
        match (key_file, passphrase_env) {
            (None, None) => Ok(Crypt::None),
            (Some(_), Some(_)) => Err(BackupError::Config(
                "backup.age_identity_file and backup.age_passphrase_env: give one, not both".into(),
            )),
            (Some(file), None) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    BackupError::Config(format!("backup.age_identity_file {}: {e}", file.display()))
                })?;
                let identities: Vec<age::x25519::Identity> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| l.parse::<age::x25519::Identity>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        BackupError::Config(format!(
                            "backup.age_identity_file {}: not an age identity file (age-keygen output): {e}",
                            file.display()
                        ))
                    })?;
                if identities.is_empty() {
                    return Err(BackupError::Config(format!(
                        "backup.age_identity_file {}: holds no AGE-SECRET-KEY line",
                        file.display()
                    )));
                }
                Ok(Crypt::Keys {
                    file: file.to_path_buf(),
                    identities: std::sync::Arc::new(identities),
                })
            }
            (None, Some(env)) => {
                let value = std::env::var(env)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        BackupError::Config(format!(
                            "backup.age_passphrase_env: the environment variable {env} is not set"
                        ))
                    })?;
                Ok(Crypt::Passphrase {
                    env: env.to_string(),
                    passphrase: age::secrecy::SecretString::from(value),
                })
            }
        }
    }

    /// Encrypts `plain` (unchanged without encryption).
    pub fn seal(&self, plain: Vec<u8>) -> Result<Vec<u8>, BackupError> {
        if let Crypt::None = self {
            return Ok(plain);
        }
        let mut writer = self.seal_to(Vec::with_capacity(plain.len() + 256))?;
        writer
            .write_all(&plain)
            .map_err(|e| BackupError::Config(format!("age: {e}")))?;
        writer
            .finish()
            .map_err(|e| BackupError::Config(format!("age: {e}")))
    }

    /// A writer that encrypts what is written to it into `out` (passes it through without
    /// encryption); [`SealWriter::finish`] ends it.
    pub fn seal_to<W: Write>(&self, out: W) -> Result<SealWriter<W>, BackupError> {
        let encryptor = match self {
            Crypt::None => return Ok(SealWriter::Plain(out)),
            Crypt::Keys { identities, .. } => {
                let recipients: Vec<age::x25519::Recipient> =
                    identities.iter().map(|i| i.to_public()).collect();
                age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| BackupError::Config(format!("age: {e}")))?
            }
            Crypt::Passphrase { passphrase, .. } => {
                age::Encryptor::with_user_passphrase(passphrase.clone())
            }
        };
        let writer = encryptor
            .wrap_output(out)
            .map_err(|e| BackupError::Config(format!("age: {e}")))?;
        Ok(SealWriter::Age(writer))
    }

    /// Decrypts stored object `name` of `store` (`stored` as read); plain objects come
    /// back as they are when no encryption is configured.
    pub fn open(&self, store: &str, name: &str, stored: &[u8]) -> Result<Vec<u8>, BackupError> {
        let Some(mut reader) =
            self.open_reader(store, name, stored.starts_with(AGE_MAGIC), stored)?
        else {
            return Ok(stored.to_vec());
        };
        let mut plain = Vec::with_capacity(stored.len());
        reader
            .read_to_end(&mut plain)
            .map_err(|e| BackupError::Corrupt {
                store: store.to_string(),
                object: name.to_string(),
                message: format!("decrypting: {e}"),
            })?;
        Ok(plain)
    }

    /// Decrypts stored object `name` of `store` from file `stored` into a new temporary
    /// file, a piece at a time; a plain object comes back as it is.
    pub fn open_file(
        &self,
        store: &str,
        name: &str,
        stored: tempfile::TempPath,
    ) -> Result<tempfile::TempPath, BackupError> {
        let local = |e: std::io::Error| BackupError::Store {
            store: store.to_string(),
            what: format!("reading {name} back from {}", stored.display()),
            message: e.to_string(),
        };
        let mut file = std::fs::File::open(&stored).map_err(local)?;
        let mut magic = Vec::with_capacity(AGE_MAGIC.len());
        (&mut file)
            .take(AGE_MAGIC.len() as u64)
            .read_to_end(&mut magic)
            .map_err(local)?;
        file.seek(std::io::SeekFrom::Start(0)).map_err(local)?;
        let input = std::io::BufReader::with_capacity(1 << 20, file);
        let Some(mut reader) = self.open_reader(store, name, magic == AGE_MAGIC, input)? else {
            return Ok(stored);
        };
        let plain = tempfile::NamedTempFile::new().map_err(local)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, plain.as_file());
        std::io::copy(&mut reader, &mut out).map_err(|e| BackupError::Corrupt {
            store: store.to_string(),
            object: name.to_string(),
            message: format!("decrypting: {e}"),
        })?;
        // A write error (a full disk) must not pass for a short object.
        out.flush().map_err(local)?;
        drop(out);
        Ok(plain.into_temp_path())
    }

    /// A reader of the plain bytes of stored object `name` (`encrypted`: whether it starts
    /// like an age file), or `None` when it is plain and no encryption is configured; an
    /// object that does not match the configuration, or a wrong key, is an error naming it.
    fn open_reader<'r, R: Read + 'r>(
        &self,
        store: &str,
        name: &str,
        encrypted: bool,
        stored: R,
    ) -> Result<Option<Box<dyn Read + 'r>>, BackupError> {
        let corrupt = |message: String| BackupError::Corrupt {
            store: store.to_string(),
            object: name.to_string(),
            message,
        };
        match (self, encrypted) {
            (Crypt::None, false) => return Ok(None),
            (Crypt::None, true) => {
                return Err(corrupt(
                    "is encrypted (age) but no key is configured: set backup.age_identity_file or backup.age_passphrase_env".into(),
                ))
            }
            (_, false) => {
                return Err(corrupt(
                    "is not encrypted although encryption is configured".into(),
                ))
            }
            _ => {}
        }
        let decryptor = age::Decryptor::new(stored)
            .map_err(|e| corrupt(format!("not a readable age file: {e}")))?;
        let wrong = |e: age::DecryptError| {
            corrupt(format!(
                "cannot be decrypted with {self:?}: {e} (a wrong key or passphrase?)"
            ))
        };
        let reader: Box<dyn Read + 'r> = match self {
            Crypt::Keys { identities, .. } => Box::new(
                decryptor
                    .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
                    .map_err(wrong)?,
            ),
            Crypt::Passphrase { passphrase, .. } => {
                let identity = age::scrypt::Identity::new(passphrase.clone());
                Box::new(
                    decryptor
                        .decrypt(std::iter::once(&identity as &dyn age::Identity))
                        .map_err(wrong)?,
                )
            }
            Crypt::None => unreachable!("handled above"),
        };
        Ok(Some(reader))
    }
}

/// A writer encrypting to an inner writer, or passing bytes through to it.
pub enum SealWriter<W: Write> {
    /// No encryption.
    Plain(W),
    /// age.
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            SealWriter::Plain(w) => w.write(buf),
            SealWriter::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            SealWriter::Plain(w) => w.flush(),
            SealWriter::Age(w) => w.flush(),
        }
    }
}

impl<W: Write> SealWriter<W> {
    /// Ends the encryption and hands back the inner writer.
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            SealWriter::Plain(w) => Ok(w),
            SealWriter::Age(w) => w.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn key_file(dir: &std::path::Path, name: &str) -> PathBuf {
        let identity = age::x25519::Identity::generate();
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "# public key: {}\n{}\n",
                identity.to_public(),
                identity.to_string().expose_secret()
            ),
        )
        .unwrap();
        path
    }

    #[test]
    fn round_trip_and_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let right = Crypt::load(Some(&key_file(dir.path(), "a.txt")), None).unwrap();
        let wrong = Crypt::load(Some(&key_file(dir.path(), "b.txt")), None).unwrap();
        let sealed = right.seal(b"segment bytes".to_vec()).unwrap();
        assert!(sealed.starts_with(AGE_MAGIC));
        assert_eq!(right.open("s", "o", &sealed).unwrap(), b"segment bytes");
        let e = wrong
            .open("s", "obj/1.avro", &sealed)
            .unwrap_err()
            .to_string();
        assert!(e.contains("obj/1.avro") && e.contains("wrong key"), "{e}");
        let e = Crypt::None
            .open("s", "obj/1.avro", &sealed)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no key is configured"), "{e}");
        let e = right
            .open("s", "obj/2.avro", b"Obj\x01plain")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not encrypted"), "{e}");
        let e = Crypt::load(Some(&dir.path().join("none.txt")), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.txt"), "{e}");
        let e = Crypt::load(None, Some("TRIBUTARY_TEST_UNSET_PASSPHRASE"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("TRIBUTARY_TEST_UNSET_PASSPHRASE"), "{e}");
    }

    #[test]
    fn files_are_decrypted_a_piece_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let right = Crypt::load(Some(&key_file(dir.path(), "a.txt")), None).unwrap();
        let wrong = Crypt::load(Some(&key_file(dir.path(), "b.txt")), None).unwrap();
        // Several of age's 64 KiB chunks, and not a multiple of them.
        let plain: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let stored = |crypt: &Crypt| {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            let mut writer = crypt.seal_to(file.as_file_mut()).unwrap();
            for piece in plain.chunks(100_000) {
                writer.write_all(piece).unwrap();
            }
            writer.finish().unwrap();
            file.into_temp_path()
        };
        let sealed = stored(&right);
        assert!(std::fs::read(&sealed).unwrap().starts_with(AGE_MAGIC));
        // What the streaming writer stores, the in-memory reader reads, and back.
        assert_eq!(
            right
                .open("s", "o", &std::fs::read(&sealed).unwrap())
                .unwrap(),
            plain
        );
        let opened = right.open_file("s", "o", sealed).unwrap();
        assert_eq!(std::fs::read(&opened).unwrap(), plain);
        let e = wrong
            .open_file("s", "big/1.avro", stored(&right))
            .unwrap_err()
            .to_string();
        assert!(e.contains("big/1.avro") && e.contains("wrong key"), "{e}");
        // A plain file comes back as it is; one cut short in the middle does not decrypt.
        let plain_file = stored(&Crypt::None);
        let path = plain_file.to_path_buf();
        let same = Crypt::None.open_file("s", "o", plain_file).unwrap();
        assert_eq!(same.to_path_buf(), path);
        let cut = stored(&right);
        let bytes = std::fs::read(&cut).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = right
            .open_file("s", "cut.avro", cut)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut.avro") && e.contains("decrypting"), "{e}");
    }
}
