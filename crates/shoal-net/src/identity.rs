//! Node identity and the cluster secret.

use std::path::{Path, PathBuf};

use crate::NodeId;

/// Noise protocol of every connection.
pub(crate) const NOISE_PARAMS: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";

/// Why an identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file could not be read or written.
    #[error("node key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not a node key.
    #[error("node key file {path} is malformed: {detail}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The cluster secret is not 32 bytes of hex.
    #[error("rpc_secret must be 64 hex digits (32 bytes): {0}")]
    BadSecret(String),
}

/// A node's static X25519 keypair.
#[derive(Clone)]
pub struct NodeKey {
    private: [u8; 32],
    public: [u8; 32],
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("id", &self.node_id())
            .finish()
    }
}

const KEY_FILE: &str = "node_key";

impl NodeKey {
    /// A fresh random keypair.
    pub fn generate() -> Self {
        let params = NOISE_PARAMS.parse().expect("valid noise params");
        let kp = snow::Builder::new(params)
            .generate_keypair()
            .expect("keypair generation");
        NodeKey {
            private: kp.private.try_into().expect("32-byte private key"),
            public: kp.public.try_into().expect("32-byte public key"),
        }
    }

    /// The keypair of a given X25519 private key: for simulations and tests that need node ids
    /// fixed by a seed. A product node uses [`NodeKey::load_or_create`].
    pub fn from_secret_bytes(private: [u8; 32]) -> Self {
        use snow::resolvers::{CryptoResolver, DefaultResolver};
        let mut dh = DefaultResolver
            .resolve_dh(&snow::params::DHChoice::Curve25519)
            .expect("the default resolver has X25519");
        dh.set(&private);
        NodeKey {
            public: dh.pubkey().try_into().expect("32-byte public key"),
            private,
        }
    }

    /// The node's id: its public key.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.public)
    }

    pub(crate) fn private(&self) -> &[u8; 32] {
        &self.private
    }

    /// Loads the key kept in `data_dir`, creating it (mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = data_dir.join(KEY_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                if bytes.len() != 64 {
                    return Err(IdentityError::Malformed {
                        path,
                        detail: format!("{} bytes, expected 64", bytes.len()),
                    });
                }
                let key = NodeKey::from_secret_bytes(bytes[..32].try_into().expect("32"));
                if key.public[..] != bytes[32..] {
                    return Err(IdentityError::Malformed {
                        path,
                        detail: "the public key does not belong to the private key".into(),
                    });
                }
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(io)?;
                let key = NodeKey::generate();
                // Two processes may create the key at once (a server starting while the CLI
                // asks its id): each writes its own temporary file and links it into place,
                // which fails if the other won; the loser then reads the winner's key, so both
                // use the key on disk.
                let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
                let mut bytes = key.private.to_vec();
                bytes.extend_from_slice(&key.public);
                write_private(&tmp, &bytes).map_err(io)?;
                let linked = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok(key),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(data_dir)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// The secret every node of a cluster shares (`rpc_secret`, 32 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; 32]);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// From its 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<Self, IdentityError> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdentityError::BadSecret(format!(
                "{} characters",
                hex.len()
            )));
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|e| IdentityError::BadSecret(e.to_string()))?;
        }
        Ok(ClusterSecret(out))
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ClusterSecret(bytes)
    }

    /// The raw secret (for deriving other keys, such as the sync id key).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The Noise pre-shared key: a key derived for this use only.
    pub(crate) fn psk(&self) -> [u8; 32] {
        blake3::derive_key("shoal 2026 rpc noise psk", &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeKey::load_or_create(dir.path()).unwrap();
        let b = NodeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        assert_eq!(
            NodeKey::from_secret_bytes(a.private).node_id(),
            a.node_id(),
            "the public key is derived from the private one"
        );
        // A key file whose halves do not belong together is refused, not trusted.
        let mut bytes = a.private.to_vec();
        bytes.extend_from_slice(&[9u8; 32]);
        std::fs::write(dir.path().join(KEY_FILE), &bytes).unwrap();
        assert!(matches!(
            NodeKey::load_or_create(dir.path()),
            Err(IdentityError::Malformed { .. })
        ));
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(matches!(
            NodeKey::load_or_create(dir.path()),
            Err(IdentityError::Malformed { .. })
        ));
    }

    #[test]
    fn secrets_parse_from_hex_only() {
        assert!(ClusterSecret::from_hex(&"ab".repeat(32)).is_ok());
        assert!(ClusterSecret::from_hex("abc").is_err());
        assert!(ClusterSecret::from_hex(&"zz".repeat(32)).is_err());
    }
}
