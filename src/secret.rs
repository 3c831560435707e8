//! Secrets as a type: redacted in `Debug`/`Display`, compared in constant time, and verified
//! against argon2id hashes with a cache so that a poll never pays a password hash twice.

use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use argon2::password_hash::{PasswordHash, PasswordHashString, PasswordVerifier};
use argon2::{Argon2, PasswordHasher};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret value (client secret, key, bearer token). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call sites that use this are the only places a secret leaves its box.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Hashes a secret with argon2id (OWASP parameters: 19 MiB, 2 passes) into a PHC string,
/// as `ciba-gateway hash-secret` prints it.
pub fn hash_secret(secret: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt =
        argon2::password_hash::SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// At most this many argon2 verifications run at once, one per CPU; the rest wait their turn
/// asynchronously. Without the bound, a flood of wrong secrets (each a cache miss, 19 MiB and
/// milliseconds of CPU) would fill tokio's blocking pool — up to 512 threads, ~10 GiB — while
/// clients whose secrets are cached never wait for it.
static HASH_SLOTS: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
});

#[cfg(test)]
static HASHING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
#[cfg(test)]
static MOST_HASHING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Test instrumentation: argon2 verifications run so far.
#[cfg(test)]
pub(crate) static HASHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What a presented secret is checked against.
#[derive(Clone)]
pub enum Expected {
    /// An argon2 PHC hash (`$argon2id$…`).
    Argon2(Arc<PasswordHashString>),
    /// A plaintext value obtained from the environment or a file.
    Plain(Secret),
    /// The SHA-256 of a secret the gateway issued (256 random bits: a registered client's). A
    /// digest is as strong as a password hash for such a value; a wrong one still pays an
    /// argon2 verification, so that it costs what a wrong secret of a configured client costs.
    Issued([u8; 32]),
}

impl fmt::Debug for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Argon2(_) => f.write_str("Argon2(<hash>)"),
            Self::Plain(_) => f.write_str("Plain(<redacted>)"),
            Self::Issued(_) => f.write_str("Issued(<digest>)"),
        }
    }
}

impl Expected {
    /// Whether both expect the same secret (compared in constant time where it is one).
    fn same_as(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Argon2(a), Self::Argon2(b)) => a.as_str() == b.as_str(),
            (Self::Plain(a), Self::Plain(b)) => {
                let a: [u8; 32] = Sha256::digest(a.expose().as_bytes()).into();
                let b: [u8; 32] = Sha256::digest(b.expose().as_bytes()).into();
                bool::from(a.ct_eq(&b))
            }
            (Self::Issued(a), Self::Issued(b)) => bool::from(a.ct_eq(b)),
            _ => false,
        }
    }

    /// Parses a PHC string; `None` if it is not an argon2 hash.
    pub fn argon2(phc: &str) -> Option<Self> {
        let parsed = PasswordHash::new(phc).ok()?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return None;
        }
        Some(Self::Argon2(Arc::new(parsed.serialize())))
    }
}

/// One argon2 verification under way, shared by every presentation of the same value.
type Run = Arc<tokio::sync::OnceCell<bool>>;

/// Verifies presented secrets against an expected one. A successful verification is remembered
/// as a salted digest of what was presented; later presentations of the same value are
/// accepted after a constant-time comparison of digests, without re-running argon2.
/// Presentations of one value that arrive while it is being verified wait for that one run: a
/// client's burst of polls against a cold cache (a restart under load) costs one argon2
/// verification, not one per request queued behind the CPU-bound pool.
#[derive(Debug)]
pub struct SecretVerifier {
    expected: Expected,
    salt: [u8; 16],
    verified: RwLock<Option<[u8; 32]>>,
    /// The argon2 verifications under way, by digest of what was presented.
    running: Mutex<Vec<([u8; 32], Run)>>,
    /// Test instrumentation: argon2 verifications this verifier ran.
    #[cfg(test)]
    ran: std::sync::atomic::AtomicUsize,
}

impl SecretVerifier {
    /// A verifier for `expected`.
    pub fn new(expected: Expected) -> Self {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        Self {
            expected,
            salt,
            verified: RwLock::new(None),
            running: Mutex::new(Vec::new()),
            #[cfg(test)]
            ran: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Keeps what `previous` verified when it expects the same secret (a client or user
    /// rebuilt by a reload), so the reload costs no argon2 run; a changed secret starts cold.
    pub fn adopt(&mut self, previous: &SecretVerifier) {
        if self.expected.same_as(&previous.expected) {
            self.salt = previous.salt;
            *self.verified.get_mut().unwrap_or_else(|e| e.into_inner()) =
                *previous.verified.read().unwrap_or_else(|e| e.into_inner());
        }
    }

    fn digest(&self, presented: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(presented.as_bytes());
        h.finalize().into()
    }

    /// Checks a presented secret. The slow path (argon2) runs on the blocking pool.
    pub async fn verify(&self, presented: &str) -> bool {
        let digest = self.digest(presented);
        if let Some(ok) = *self.verified.read().unwrap_or_else(|e| e.into_inner())
            && bool::from(ok.ct_eq(&digest))
        {
            return true;
        }
        let ok = match &self.expected {
            Expected::Plain(s) => {
                // Compare digests so that the comparison time does not depend on lengths either.
                let a: [u8; 32] = Sha256::digest(s.expose().as_bytes()).into();
                let b: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
                bool::from(a.ct_eq(&b))
            }
            Expected::Issued(expected) => {
                let b: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
                let ok = bool::from(expected.ct_eq(&b));
                if !ok {
                    let _ = Box::pin(unknowable().verify(presented)).await;
                }
                ok
            }
            Expected::Argon2(phc) => {
                let run = {
                    let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                    match running.iter().find(|(d, _)| bool::from(d.ct_eq(&digest))) {
                        Some((_, run)) => Arc::clone(run),
                        None => {
                            let run = Arc::new(tokio::sync::OnceCell::new());
                            running.push((digest, Arc::clone(&run)));
                            run
                        }
                    }
                };
                let ok = *run
                    .get_or_init(|| {
                        #[cfg(test)]
                        self.ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        argon2_verify(Arc::clone(phc), presented.to_owned())
                    })
                    .await;
                self.running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|(_, r)| !Arc::ptr_eq(r, &run));
                ok
            }
        };
        if ok {
            *self.verified.write().unwrap_or_else(|e| e.into_inner()) = Some(digest);
        }
        ok
    }
}

/// One argon2 verification on the blocking pool, within [`HASH_SLOTS`].
async fn argon2_verify(phc: Arc<PasswordHashString>, presented: String) -> bool {
    let Ok(slot) = HASH_SLOTS.acquire().await else {
        return false; // never closed
    };
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering::SeqCst;
            let now = HASHING.fetch_add(1, SeqCst) + 1;
            MOST_HASHING.fetch_max(now, SeqCst);
            HASHED.fetch_add(1, SeqCst);
        }
        let ok = Argon2::default()
            .verify_password(presented.as_bytes(), &phc.password_hash())
            .is_ok();
        #[cfg(test)]
        HASHING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        ok
    })
    .await
    .unwrap_or(false)
}

/// A verifier of an argon2id hash of a random secret nobody knows: verifying against it costs
/// what a wrong secret for a real client costs, so an unknown `client_id` cannot be told from a
/// known one by the time it takes (hostile traffic, item 4).
pub fn unknowable() -> &'static SecretVerifier {
    static DUMMY: LazyLock<SecretVerifier> = LazyLock::new(|| {
        let phc = hash_secret(&crate::protocol::random_token());
        SecretVerifier::new(Expected::argon2(&phc).expect("a fresh argon2id hash parses"))
    });
    &DUMMY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reloaded_verifier_keeps_what_it_verified_only_for_the_same_secret() {
        use std::sync::atomic::Ordering::SeqCst;
        let phc = hash_secret("s3cret");
        let before = SecretVerifier::new(Expected::argon2(&phc).unwrap());
        assert!(before.verify("s3cret").await);
        let mut same = SecretVerifier::new(Expected::argon2(&phc).unwrap());
        same.adopt(&before);
        assert!(same.verify("s3cret").await);
        assert_eq!(same.ran.load(SeqCst), 0, "no argon2 run after the reload");
        assert!(!same.verify("wrong").await);
        let mut changed = SecretVerifier::new(Expected::argon2(&hash_secret("other")).unwrap());
        changed.adopt(&before);
        assert!(
            !changed.verify("s3cret").await,
            "the old secret is not accepted"
        );
        assert!(changed.verify("other").await);
    }

    #[tokio::test]
    async fn argon2_hash_verifies_and_caches() {
        let v = SecretVerifier::new(Expected::argon2(&hash_secret("s3cret")).unwrap());
        assert!(!v.verify("wrong").await);
        assert!(v.verify("s3cret").await);
        assert!(v.verified.read().unwrap().is_some());
        assert!(v.verify("s3cret").await);
        assert!(!v.verify("s3cret ").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_flood_of_wrong_secrets_hashes_at_most_one_per_cpu() {
        let v = Arc::new(SecretVerifier::new(
            Expected::argon2(&hash_secret("right")).unwrap(),
        ));
        let wrong: Vec<_> = (0..24)
            .map(|i| {
                let v = Arc::clone(&v);
                tokio::spawn(async move { v.verify(&format!("wrong-{i}")).await })
            })
            .collect();
        for w in wrong {
            assert!(!w.await.unwrap());
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let most = MOST_HASHING.load(std::sync::atomic::Ordering::SeqCst);
        assert!(most >= 1 && most <= cpus, "{most} at once on {cpus} CPUs");
        assert!(v.verify("right").await);
    }

    // A burst presenting one secret against a cold cache runs argon2 once; a different value
    // arriving at the same time still gets its own verification.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_one_secret_verifies_once() {
        let v = Arc::new(SecretVerifier::new(
            Expected::argon2(&hash_secret("right")).unwrap(),
        ));
        let runs = |v: &Arc<SecretVerifier>, s: &'static str| {
            let v = Arc::clone(v);
            tokio::spawn(async move { v.verify(s).await })
        };
        let burst: Vec<_> = (0..16).map(|_| runs(&v, "right")).collect();
        let other = runs(&v, "wrong");
        for b in burst {
            assert!(b.await.unwrap());
        }
        assert!(!other.await.unwrap());
        // One for the burst, one for the other value; not seventeen.
        assert_eq!(v.ran.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(v.running.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_issued_secret_compares_digests_and_a_wrong_one_pays_argon2() {
        let v = SecretVerifier::new(Expected::Issued(Sha256::digest(b"issued").into()));
        let before = HASHED.load(std::sync::atomic::Ordering::SeqCst);
        assert!(v.verify("issued").await);
        assert!(!v.verify("issued!").await);
        assert!(HASHED.load(std::sync::atomic::Ordering::SeqCst) > before);
    }

    #[tokio::test]
    async fn plain_secret_compares() {
        let v = SecretVerifier::new(Expected::Plain(Secret::new("abc")));
        assert!(v.verify("abc").await);
        assert!(!v.verify("abd").await);
        assert_eq!(format!("{:?}", Secret::new("abc")), "Secret(<redacted>)");
    }
}
