//! Sealing secrets at rest: AES-256-GCM under a key derived from the
//! operator's passphrase with Argon2id and a per-database salt.
//!
//! Every value gets a fresh random nonce, and a *purpose* string (e.g.
//! `credentials.secret:gh`) is bound in as associated data, so a sealed blob
//! copied into another row or column fails to open instead of leaking.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use hangar_core::Secret;
use rand::RngCore;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const KEY_CHECK_PURPOSE: &str = "controller.key_check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"hangar key check v1";

/// Minimum passphrase length accepted by [`Sealer::derive`].
pub const MIN_PASSPHRASE_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the passphrase must be at least {MIN_PASSPHRASE_LEN} characters long")]
    PassphraseTooShort,
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value does not open with this key (wrong passphrase or tampered data)")]
    Open,
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// Allocations of at least this many bytes are always served by `mmap` and
/// given back to the OS on free by glibc's malloc: its mmap threshold
/// rises with every large block freed, but never above 32 MiB on 64-bit
/// targets (`DEFAULT_MMAP_THRESHOLD_MAX`). Below it, a 19 MiB Argon2 block
/// freed once raises the threshold, and the next one comes from (and stays
/// in) the arena of whichever thread ran it.
const RELEASED_ALLOC_BYTES: usize = 33 << 20;

/// Runs Argon2id (v0x13) with `params` into `out`, in memory that is
/// returned to the OS when it finishes.
///
/// The working memory (`params.block_count()` KiB, all of it written) sits
/// in an allocation reserved large enough that the allocator maps it on its
/// own and unmaps it on free; the reserved tail is never touched, so it
/// costs address space, not RSS. Every Argon2 computation in Hangar (this
/// key derivation and the admin password hashes) goes through here, so
/// none of them leaves its buffer in the daemon's resident memory.
pub fn argon2id_released(
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    let reserve = blocks.max(RELEASED_ALLOC_BYTES / Block::SIZE);
    let mut memory: Vec<Block> = Vec::with_capacity(reserve);
    memory.resize(blocks, Block::default());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password_into_with_memory(
        password,
        salt,
        out,
        &mut memory,
    )
}

/// Seals and opens secrets with one derived key.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    /// Derives the key from `passphrase` and `salt` (Argon2id, 19 MiB, 2
    /// passes: OWASP's recommended minimum; runs once per start).
    pub fn derive(passphrase: &Secret, salt: &[u8]) -> Result<Self, SealError> {
        if passphrase.expose().chars().count() < MIN_PASSPHRASE_LEN {
            return Err(SealError::PassphraseTooShort);
        }
        let params =
            Params::new(19 * 1024, 2, 1, Some(32)).map_err(|e| SealError::Kdf(e.to_string()))?;
        let mut key = [0u8; 32];
        argon2id_released(params, passphrase.expose().as_bytes(), salt, &mut key)
            .map_err(|e| SealError::Kdf(e.to_string()))?;
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|e| SealError::Kdf(e.to_string()))?;
        Ok(Self { cipher })
    }

    pub fn new_salt() -> Vec<u8> {
        let mut salt = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        salt
    }

    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.as_bytes(),
                },
            )
            // AES-GCM encryption only fails for inputs over 64 GiB.
            .expect("AES-GCM encryption of a small value cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = sealed[1..].split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)
    }

    pub fn seal_secret(&self, purpose: &str, secret: &Secret) -> Vec<u8> {
        self.seal(purpose, secret.expose().as_bytes())
    }

    pub fn open_secret(&self, purpose: &str, sealed: &[u8]) -> Result<Secret, SealError> {
        let bytes = self.open(purpose, sealed)?;
        String::from_utf8(bytes)
            .map(Secret::new)
            .map_err(|_| SealError::Malformed)
    }

    /// The blob stored to recognise this key later.
    pub fn key_check(&self) -> Vec<u8> {
        self.seal(KEY_CHECK_PURPOSE, KEY_CHECK_PLAINTEXT)
    }

    /// Whether `blob` (from [`Sealer::key_check`]) was made with this key.
    pub fn verify_key_check(&self, blob: &[u8]) -> bool {
        self.open(KEY_CHECK_PURPOSE, blob)
            .is_ok_and(|p| p == KEY_CHECK_PLAINTEXT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(s: &str) -> Secret {
        Secret::new(s.repeat(40 / s.len() + 1))
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let s = Sealer::derive(&pass("correct horse"), b"0123456789abcdef").unwrap();
        let a = s.seal("p", b"ghp_token");
        let b = s.seal("p", b"ghp_token");
        assert_ne!(a, b, "every seal uses a fresh nonce");
        assert_eq!(s.open("p", &a).unwrap(), b"ghp_token");
        assert!(!a.windows(9).any(|w| w == b"ghp_token"));
    }

    #[test]
    fn released_memory_derives_the_same_key_as_the_crate() {
        // Databases sealed before the key derivation moved to
        // `argon2id_released` must still open: same algorithm, same bytes.
        let params = Params::new(19 * 1024, 2, 1, Some(32)).unwrap();
        let mut ours = [0u8; 32];
        argon2id_released(
            params.clone(),
            b"a passphrase",
            b"0123456789abcdef",
            &mut ours,
        )
        .unwrap();
        let mut theirs = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(b"a passphrase", b"0123456789abcdef", &mut theirs)
            .unwrap();
        assert_eq!(ours, theirs);
        // Larger than the reserve: the buffer grows to fit.
        let big = Params::new(40 * 1024, 1, 1, Some(32)).unwrap();
        let mut a = [0u8; 32];
        argon2id_released(big.clone(), b"pw", b"0123456789abcdef", &mut a).unwrap();
        let mut b = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, big)
            .hash_password_into(b"pw", b"0123456789abcdef", &mut b)
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn purpose_is_bound() {
        let s = Sealer::derive(&pass("correct horse"), b"0123456789abcdef").unwrap();
        let a = s.seal("credentials.secret:a", b"x");
        assert_eq!(s.open("credentials.secret:b", &a), Err(SealError::Open));
    }

    #[test]
    fn wrong_key_is_detected() {
        let salt = b"0123456789abcdef";
        let right = Sealer::derive(&pass("correct horse"), salt).unwrap();
        let wrong = Sealer::derive(&pass("battery staple"), salt).unwrap();
        let check = right.key_check();
        assert!(right.verify_key_check(&check));
        assert!(!wrong.verify_key_check(&check));
        let other_salt = Sealer::derive(&pass("correct horse"), b"fedcba9876543210").unwrap();
        assert!(!other_salt.verify_key_check(&check));
    }

    #[test]
    fn tampering_and_garbage() {
        let s = Sealer::derive(&pass("correct horse"), b"0123456789abcdef").unwrap();
        let mut a = s.seal("p", b"value");
        let last = a.len() - 1;
        a[last] ^= 1;
        assert_eq!(s.open("p", &a), Err(SealError::Open));
        assert_eq!(s.open("p", b"short"), Err(SealError::Malformed));
    }

    #[test]
    fn short_passphrase_refused() {
        assert_eq!(
            Sealer::derive(&Secret::new("too short"), b"0123456789abcdef").unwrap_err(),
            SealError::PassphraseTooShort
        );
    }
}
