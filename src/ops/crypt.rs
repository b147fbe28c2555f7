//! age encryption for off-site copies, through the `age` crate (the rage project): recipients
//! (`age1…` X25519 keys, SSH `ssh-ed25519`/`ssh-rsa` public keys, or files of them as `age -R`
//! reads them) to encrypt to, identities (age identity files, SSH private keys) to decrypt with,
//! and `vault keygen`. Everything streams: nothing is held whole in memory.

use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};

/// The first bytes of every age file (the header's version line).
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// What went wrong with keys or with the age format.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error("bad recipient '{text}': {why}")]
    BadRecipient { text: String, why: String },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: not an age identity file or an SSH private key age can use", path.display())]
    BadIdentity { path: PathBuf },
    #[error("none of the identities in {} can decrypt {what}", path.display())]
    WrongIdentity { path: PathBuf, what: String },
    #[error("{what}: {source}")]
    Decrypt {
        what: String,
        source: age::DecryptError,
    },
    #[error("encrypting: {0}")]
    Encrypt(#[from] age::EncryptError),
}

/// Whom an off-site copy is encrypted to.
pub struct Recipients(Vec<Box<dyn age::Recipient + Send>>);

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipients({})", self.0.len())
    }
}

/// One recipient line: `age1…`, or an SSH public key line.
fn recipient(text: &str) -> Result<Box<dyn age::Recipient + Send>, CryptError> {
    let bad = |why: String| CryptError::BadRecipient {
        text: text.chars().take(80).collect(),
        why,
    };
    if text.starts_with("age1") {
        return text
            .parse::<age::x25519::Recipient>()
            .map(|r| Box::new(r) as _)
            .map_err(|e| bad(e.to_string()));
    }
    if text.starts_with("ssh-") {
        return text
            .parse::<age::ssh::Recipient>()
            .map(|r| Box::new(r) as _)
            .map_err(|e| bad(format!("{e:?}")));
    }
    Err(bad(
        "expected an age1… key or an ssh-ed25519/ssh-rsa public key".into(),
    ))
}

impl Recipients {
    /// The recipients given one by one and those in `files` (one a line; `#` comments and
    /// blank lines skipped, as `age -R` reads them).
    pub fn parse(given: &[String], files: &[PathBuf]) -> Result<Recipients, CryptError> {
        let mut out = Vec::new();
        for g in given {
            out.push(recipient(g.trim())?);
        }
        for f in files {
            let text = std::fs::read_to_string(f).map_err(|e| CryptError::Read {
                path: f.clone(),
                source: e,
            })?;
            for line in text.lines().map(str::trim) {
                if !line.is_empty() && !line.starts_with('#') {
                    out.push(recipient(line)?);
                }
            }
        }
        Ok(Recipients(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Starts an age stream to these recipients on `w`; `finish` it to end the file.
    pub fn encrypt<W: Write>(&self, w: W) -> Result<age::stream::StreamWriter<W>, CryptError> {
        let e =
            age::Encryptor::with_recipients(self.0.iter().map(|r| &**r as &dyn age::Recipient))?;
        e.wrap_output(w)
            .map_err(|e| CryptError::Encrypt(age::EncryptError::Io(e)))
    }
}

/// The keys an off-site copy is decrypted with.
pub struct Identities {
    path: PathBuf,
    ids: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({})", self.path.display())
    }
}

/// Answers an encrypted SSH key's passphrase request with the one given (never prompts).
#[derive(Clone)]
struct Passphrase(Option<SecretString>);

impl age::Callbacks for Passphrase {
    fn display_message(&self, _: &str) {}
    fn confirm(&self, _: &str, _: &str, _: Option<&str>) -> Option<bool> {
        None
    }
    fn request_public_string(&self, _: &str) -> Option<String> {
        None
    }
    fn request_passphrase(&self, _: &str) -> Option<SecretString> {
        self.0.clone()
    }
}

impl Identities {
    /// Reads an age identity file, or an SSH private key (`passphrase` unlocks an encrypted
    /// one).
    pub fn read(path: &Path, passphrase: Option<String>) -> Result<Identities, CryptError> {
        let text = std::fs::read(path).map_err(|e| CryptError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        let bad = || CryptError::BadIdentity {
            path: path.to_path_buf(),
        };
        let ids = match age::IdentityFile::from_buffer(&text[..]).map(|f| f.into_identities()) {
            Ok(Ok(ids)) if !ids.is_empty() => ids,
            _ => {
                let name = Some(path.display().to_string());
                let key = age::ssh::Identity::from_buffer(&text[..], name).map_err(|_| bad())?;
                if matches!(key, age::ssh::Identity::Unsupported(_)) {
                    return Err(bad());
                }
                let cb = Passphrase(passphrase.map(SecretString::from));
                vec![Box::new(key.with_callbacks(cb)) as Box<dyn age::Identity + Send + Sync>]
            }
        };
        Ok(Identities {
            path: path.to_path_buf(),
            ids,
        })
    }

    /// Opens the age stream `r` (named `what` in errors): a wrong key fails here, before any
    /// plaintext is read.
    pub fn decrypt<R: Read>(
        &self,
        r: R,
        what: &str,
    ) -> Result<age::stream::StreamReader<R>, CryptError> {
        let d = age::Decryptor::new(r).map_err(|e| CryptError::Decrypt {
            what: what.to_string(),
            source: e,
        })?;
        d.decrypt(self.ids.iter().map(|i| &**i as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => CryptError::WrongIdentity {
                    path: self.path.clone(),
                    what: what.to_string(),
                },
                e => CryptError::Decrypt {
                    what: what.to_string(),
                    source: e,
                },
            })
    }
}

/// A new X25519 identity: (the identity file's text, its recipient).
pub fn keygen() -> (String, String) {
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let now = crate::time::rfc3339(crate::time::now_ns());
    let text = format!(
        "# created: {now}\n# public key: {public}\n{}\n",
        id.to_string().expose_secret()
    );
    (text, public)
}

/// Whether `r` starts with the age header (reads at most its length).
pub fn is_age(r: &mut dyn BufRead) -> io::Result<bool> {
    let buf = r.fill_buf()?;
    Ok(buf.starts_with(AGE_MAGIC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_a_wrong_key() {
        let (text, public) = keygen();
        let dir = tempfile::tempdir().unwrap();
        let idf = dir.path().join("id.txt");
        std::fs::write(&idf, &text).unwrap();
        let r = Recipients::parse(&[public], &[]).unwrap();
        let mut w = r.encrypt(Vec::new()).unwrap();
        w.write_all(&vec![7u8; 200_000]).unwrap();
        let sealed = w.finish().unwrap();
        assert!(sealed.starts_with(AGE_MAGIC));
        let ids = Identities::read(&idf, None).unwrap();
        let mut out = Vec::new();
        ids.decrypt(&sealed[..], "x")
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, vec![7u8; 200_000]);
        let (other, _) = keygen();
        std::fs::write(&idf, other).unwrap();
        let e = Identities::read(&idf, None)
            .unwrap()
            .decrypt(&sealed[..], "x")
            .err()
            .unwrap();
        assert!(matches!(e, CryptError::WrongIdentity { .. }), "{e}");
        assert!(Recipients::parse(&["age1nonsense".into()], &[]).is_err());
        std::fs::write(&idf, "hello\n").unwrap();
        assert!(Identities::read(&idf, None).is_err());
    }
}
