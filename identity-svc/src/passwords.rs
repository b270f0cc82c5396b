//! Password hashing with Argon2id (default parameters: 19 MiB, 2 passes) on a
//! small, fixed pool of dedicated threads.
//!
//! Each hash or verification needs 19 MiB of working memory, so concurrency
//! is memory. `N` workers each own one 19 MiB buffer, allocated on first use
//! and reused for every job, so Argon2 never holds more than `N × 19 MiB`.
//! Work is admitted only while a worker is free; otherwise the caller gets
//! [`PasswordError::Busy`] at once (the edge answers 503 with `Retry-After`) —
//! there is no queue that grows with the load.
//!
//! The buffers are ours rather than the argon2 crate's own per-call
//! allocation: that one is 64-byte aligned, and under glibc the memory one
//! hash freed was not reused by the next — ten hashes in a row on one thread
//! left 171 MiB resident (`tests/hashing_memory.rs` guards against it coming
//! back). Every block of the buffer is written in Argon2's first pass before
//! it is read, so nothing of an earlier job enters the next result.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, OnceLock,
        mpsc::{Receiver, SyncSender},
    },
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use mesh_kit::{ErrorCode, error::invalid_field};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tonic::Status;

pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 1024;

/// Default of `CREWMESH_PASSWORD_HASH_CONCURRENCY`: 4 × 19 MiB = 76 MiB,
/// which leaves most of a 256 MiB pod to everything else.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// What a refused caller is told to wait: one hash takes tens of milliseconds.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be {MIN_LEN} to {MAX_LEN} characters")]
    Invalid,
    #[error("too many sign-ins are being processed right now; retry in a moment")]
    Busy,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

impl From<PasswordError> for Status {
    fn from(err: PasswordError) -> Status {
        match err {
            PasswordError::Invalid => invalid_field("password", err.to_string()),
            PasswordError::Busy => {
                crate::error::retry_later(ErrorCode::Unavailable, err.to_string(), RETRY_AFTER)
            }
            PasswordError::Hashing(ref reason) => {
                tracing::error!(%reason, "password hashing failed");
                ErrorCode::Internal.status("internal error; see the service logs")
            }
        }
    }
}

pub fn validate(password: &str) -> Result<(), PasswordError> {
    let len = password.chars().count();
    if (MIN_LEN..=MAX_LEN).contains(&len) {
        Ok(())
    } else {
        Err(PasswordError::Invalid)
    }
}

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// A worker's Argon2 working memory.
#[derive(Debug, Default)]
struct Memory(Vec<Block>);

impl Memory {
    /// The first `blocks` blocks, allocated once and kept. Every hash this
    /// service stores uses the default parameters, so a stored hash asking
    /// for more is refused rather than allowed to grow the buffer.
    fn blocks(&mut self, blocks: usize) -> Result<&mut [Block], PasswordError> {
        if blocks > Params::default().block_count() {
            return Err(PasswordError::Hashing(format!(
                "a hash needs {blocks} KiB, more than this service hashes with"
            )));
        }
        if self.0.len() < blocks {
            self.0.resize(blocks, Block::default());
        }
        Ok(&mut self.0[..blocks])
    }
}

/// Hashes and verifies passwords on its own worker threads, at most
/// `workers` at a time. Clones share the workers; they stop when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct Hasher {
    /// One per worker: holding one means a worker is (or is about to be) ours.
    permits: Arc<Semaphore>,
    jobs: SyncSender<Job>,
}

impl Hasher {
    pub fn new(workers: usize) -> std::io::Result<Hasher> {
        let workers = workers.max(1);
        // Never full: a job is sent only with a permit, and there are `workers` permits.
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(workers);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..workers {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || run_worker(&queue))?;
        }
        Ok(Hasher {
            permits: Arc::new(Semaphore::new(workers)),
            jobs,
        })
    }

    /// An Argon2id PHC string for `password`, after checking its length.
    pub async fn hash(&self, password: SecretString) -> Result<String, PasswordError> {
        validate(password.expose_secret())?;
        self.run(move |memory| hash_with(memory, password.expose_secret().as_bytes()))
            .await?
    }

    /// Whether `password` matches `stored`. With no stored hash (unknown
    /// account) it does the same work against a dummy hash, under the same
    /// bound, so timing does not reveal which emails exist.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        self.run(move |memory| {
            let password = password.expose_secret().as_bytes();
            let (hash, known) = match &stored {
                Some(hash) => (hash.as_str(), true),
                None => (dummy_hash(memory)?, false),
            };
            Ok(verify_with(memory, password, hash)? && known)
        })
        .await?
    }

    /// Runs `work` on a free worker, or refuses at once when none is free.
    async fn run<T, F>(&self, work: F) -> Result<T, PasswordError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Memory) -> T + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| PasswordError::Busy)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let out = work(memory);
            // Released when the work is done, not when the caller stops
            // waiting, so a permit always means an idle worker: a cancelled
            // request must not let new work queue behind its running job.
            drop(permit);
            // The caller may have gone away; then nobody wants the answer.
            let _ = reply.send(out);
        });
        self.jobs
            .try_send(job)
            .map_err(|_| PasswordError::Hashing("the hashing workers are gone".into()))?;
        answer
            .await
            .map_err(|_| PasswordError::Hashing("a hashing worker failed".into()))
    }
}

fn run_worker(queue: &Mutex<Receiver<Job>>) {
    let mut memory = Memory::default();
    loop {
        // The lock is held while waiting for a job, never while running one.
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            // Every `Hasher` was dropped.
            return;
        };
        // A panicking job loses its answer (the caller sees `Hashing`), not the worker.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory))).is_err() {
            tracing::error!("a password hashing job panicked");
        }
    }
}

/// Argon2id v1.3 with the default parameters into `memory`, as a PHC string.
fn hash_with(memory: &mut Memory, password: &[u8]) -> Result<String, PasswordError> {
    let params = Params::default();
    let mut salt = [0u8; Salt::RECOMMENDED_LENGTH];
    aws_lc_rs::rand::fill(&mut salt)
        .map_err(|_| PasswordError::Hashing("the system random generator failed".into()))?;
    let salt = Salt::new(&salt).map_err(hashing)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            password,
            salt.as_ref(),
            &mut out,
            memory.blocks(params.block_count())?,
        )
        .map_err(hashing)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(hashing)?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(hashing)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored`, computed in `memory`
/// with the stored algorithm, version and parameters; compared in constant
/// time (`Output`'s equality). What argon2's own `verify_password` does.
fn verify_with(memory: &mut Memory, password: &[u8], stored: &str) -> Result<bool, PasswordError> {
    let phc = PasswordHash::new(stored).map_err(hashing)?;
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return Ok(false);
    };
    let algorithm = Algorithm::try_from(phc.algorithm.as_str()).map_err(hashing)?;
    let version = match phc.version {
        Some(v) => Version::try_from(v).map_err(hashing)?,
        None => Version::default(),
    };
    let params = Params::try_from(&phc).map_err(hashing)?;
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(
            password,
            salt.as_ref(),
            out,
            memory.blocks(params.block_count())?,
        )
        .map_err(hashing)?;
    Ok(Output::new(out).map_err(hashing)? == *expected)
}

fn hashing(e: impl std::fmt::Display) -> PasswordError {
    PasswordError::Hashing(e.to_string())
}

/// What an unknown account's password is checked against: same parameters,
/// so the same cost as a real one.
fn dummy_hash(memory: &mut Memory) -> Result<&'static str, PasswordError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let hash = hash_with(memory, b"crewmesh timing equaliser")?;
    Ok(DUMMY.get_or_init(|| hash))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let hasher = Hasher::new(2).unwrap();
        let hash = hasher.hash(secret("correct horse battery")).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            hasher
                .verify(secret("correct horse battery"), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(secret("wrong horse battery"), Some(hash))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(secret("anything at all"), None)
                .await
                .unwrap()
        );
    }

    #[test]
    fn hashes_are_interchangeable_with_the_argon2_crates_own() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let mut memory = Memory::default();
        let ours = hash_with(&mut memory, b"correct horse battery").unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery", ours.as_str())
                .is_ok()
        );
        let theirs = Argon2::default()
            .hash_password(b"correct horse battery")
            .unwrap()
            .to_string();
        assert!(verify_with(&mut memory, b"correct horse battery", &theirs).unwrap());
        assert!(!verify_with(&mut memory, b"wrong horse battery", &theirs).unwrap());
        // The buffer was allocated once, at the default size.
        assert_eq!(memory.0.len(), Params::default().block_count());
        // A stored hash asking for more memory than that is refused, not obeyed.
        let greedy = theirs.replace("m=19456", "m=65536");
        assert!(verify_with(&mut memory, b"correct horse battery", &greedy).is_err());
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(validate("short").is_err());
        assert!(validate("long enough pw").is_ok());
    }

    #[tokio::test]
    async fn a_full_pool_refuses_at_once_and_serves_again_when_a_worker_frees() {
        let hasher = Hasher::new(2).unwrap();
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        // Both workers busy until the gate opens.
        let mut held = Vec::new();
        for _ in 0..2 {
            let gate = gate.clone();
            let hasher = hasher.clone();
            held.push(tokio::spawn(async move {
                hasher
                    .run(move |_| gate.lock().map(|g| g.recv().is_ok()).unwrap_or(false))
                    .await
            }));
        }
        testkit::eventually(Duration::from_secs(5), "both workers taken", || async {
            (hasher.permits.available_permits() == 0).then_some(())
        })
        .await
        .unwrap();

        // Refused without waiting, for hashing and for verifying alike.
        let refused = tokio::time::timeout(
            Duration::from_millis(500),
            hasher.hash(secret("correct horse battery")),
        )
        .await
        .expect("a full pool answers at once");
        assert!(matches!(refused, Err(PasswordError::Busy)), "{refused:?}");
        assert!(matches!(
            hasher.verify(secret("correct horse battery"), None).await,
            Err(PasswordError::Busy)
        ));

        open.send(()).unwrap();
        open.send(()).unwrap();
        for job in held {
            assert!(job.await.unwrap().unwrap());
        }
        assert!(hasher.hash(secret("correct horse battery")).await.is_ok());
    }

    #[tokio::test]
    async fn no_more_than_the_bound_ever_run_at_once() {
        let hasher = Hasher::new(4).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let (hasher, running, peak) = (hasher.clone(), running.clone(), peak.clone());
            tasks.spawn(async move {
                hasher
                    .run(move |memory| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        // The real work: 19 MiB for a while.
                        let hashed = hash_with(memory, b"a long enough password").is_ok();
                        running.fetch_sub(1, Ordering::SeqCst);
                        hashed
                    })
                    .await
            });
        }
        let (mut done, mut busy) = (0, 0);
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(true) => done += 1,
                Err(PasswordError::Busy) => busy += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(done + busy, 40);
        assert!(done >= 4, "{done} hashed");
        assert!(busy > 0, "40 at once cannot all fit 4 workers");
        assert!(peak.load(Ordering::SeqCst) <= 4, "{peak:?} ran at once");
    }
}
