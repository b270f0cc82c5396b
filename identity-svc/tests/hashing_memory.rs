//! Password hashing keeps its memory bounded however long it runs: the
//! workers' buffers are all Argon2 ever holds, burst after burst.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use identity_svc::passwords::Hasher;
use secrecy::SecretString;

/// One Argon2id hash's working memory (the default parameters).
const HASH_MIB: u64 = 19;

/// Anonymous resident memory of this process in MiB.
fn anon_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon in /proc/self/status");
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

#[tokio::test]
async fn bursts_of_hashing_never_hold_more_than_the_workers_buffers() {
    const WORKERS: u64 = 4;
    let hasher = Hasher::new(WORKERS as usize).unwrap();
    let baseline = anon_rss_mib();
    let mut hashed = 0;
    for round in 0..10 {
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let hasher = hasher.clone();
            burst.spawn(async move {
                hasher
                    .hash(SecretString::from("a long enough password".to_owned()))
                    .await
                    .is_ok()
            });
        }
        hashed += burst.join_all().await.into_iter().filter(|ok| *ok).count();
        let held = anon_rss_mib().saturating_sub(baseline);
        // Before the workers owned their buffers, each hash's 64-byte-aligned
        // allocation took fresh memory: ten in a row on one thread held 171 MiB.
        assert!(
            held <= (WORKERS + 1) * HASH_MIB,
            "after round {round} ({hashed} hashes) {held} MiB are held"
        );
    }
    assert!(hashed >= 40, "{hashed} hashed");
}
