//! Optional encryption of stored data objects (archive segments and snapshot objects) in
//! the [age](https://age-encryption.org) format (the `age` crate), so `age -d -i key.txt`
//! decrypts any object by hand. The key is an age identity file (`age-keygen` output,
//! whose public keys the objects are encrypted to) or a passphrase read from an
//! environment variable; neither is ever written in the configuration.
//!
//! Checksums in manifests are of the stored (encrypted) bytes, so `verify` finds damage
//! before decrypting; a wrong key is reported as such, naming the object.

use crate::error::BackupError;
use std::io::{Read, Write};
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
        let encryptor = match self {
            Crypt::None => return Ok(plain),
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
        let mut out = Vec::with_capacity(plain.len() + 256);
        let mut writer = encryptor
            .wrap_output(&mut out)
            .map_err(|e| BackupError::Config(format!("age: {e}")))?;
        writer
            .write_all(&plain)
            .and_then(|_| writer.finish().map(drop))
            .map_err(|e| BackupError::Config(format!("age: {e}")))?;
        Ok(out)
    }

    /// Decrypts stored object `name` of `store` (`stored` as read); plain objects come
    /// back as they are when no encryption is configured.
    pub fn open(&self, store: &str, name: &str, stored: &[u8]) -> Result<Vec<u8>, BackupError> {
        let corrupt = |message: String| BackupError::Corrupt {
            store: store.to_string(),
            object: name.to_string(),
            message,
        };
        let encrypted = stored.starts_with(AGE_MAGIC);
        match (self, encrypted) {
            (Crypt::None, false) => return Ok(stored.to_vec()),
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
        let mut reader: Box<dyn Read> = match self {
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
        let mut plain = Vec::with_capacity(stored.len());
        reader
            .read_to_end(&mut plain)
            .map_err(|e| corrupt(format!("decrypting: {e}")))?;
        Ok(plain)
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
}
