//! Checkpoint keys: one line of 64 lowercase hex digits per file.
//!
//! - the secret key file holds the 32-byte Ed25519 seed (the RFC 8032 private key);
//! - the public key file, `<secret file>.pub`, holds the 32-byte RFC 8032 public key.

use ed25519_dalek::{SigningKey, VerifyingKey};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: expected one line of 64 hex digits (a 32-byte Ed25519 key)")]
    Format { path: PathBuf },
    #[error("{path}: not a valid Ed25519 public key")]
    NotAPublicKey { path: PathBuf },
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
}

/// Where the public key of the secret key file `secret` is written: `secret` + `.pub`.
pub fn public_key_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Generates a key pair: the seed goes to `secret` (created with mode 0600, never overwritten),
/// the public key to [`public_key_path`]. Returns the public key.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_path_buf(), source }
}

pub fn generate_key_file(secret: &Path) -> Result<VerifyingKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let public = key.verifying_key();
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(secret).map_err(io(secret))?;
    file.write_all(format!("{}\n", hex::encode(key.to_bytes())).as_bytes()).map_err(io(secret))?;
    file.sync_all().map_err(io(secret))?;
    let public_path = public_key_path(secret);
    std::fs::write(&public_path, format!("{}\n", hex::encode(public.to_bytes()))).map_err(io(&public_path))?;
    Ok(public)
}

fn read_32(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    let mut out = [0u8; 32];
    match hex::decode_to_slice(text.trim(), &mut out) {
        Ok(()) => Ok(out),
        Err(_) => Err(KeyError::Format { path: path.to_path_buf() }),
    }
}

/// Reads a secret key file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let mut seed = read_32(path)?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

/// Reads a public key file.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(&read_32(path)?).map_err(|_| KeyError::NotAPublicKey { path: path.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_pair_that_loads_back_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("audit.key");
        let public = generate_key_file(&secret).unwrap();
        assert_eq!(load_signing_key(&secret).unwrap().verifying_key(), public);
        assert_eq!(load_verifying_key(&public_key_path(&secret)).unwrap(), public);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(matches!(generate_key_file(&secret), Err(KeyError::Io { .. })));
        assert_eq!(load_signing_key(&secret).unwrap().verifying_key(), public, "the first key must survive");
        std::fs::write(&secret, "abc\n").unwrap();
        assert!(matches!(load_signing_key(&secret), Err(KeyError::Format { .. })));
    }
}
