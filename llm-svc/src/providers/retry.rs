//! Bounded retries with exponential backoff and full jitter, honouring the
//! provider's `Retry-After` (capped, so one slow provider cannot hold a
//! conversation hostage).

use std::{future::Future, time::Duration};

use super::ProviderError;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The most all attempts and pauses may take together: no attempt starts
    /// that could not finish within it (at `attempt_timeout`). Callers'
    /// deadlines are set above it — the gateway's run deadline covers this
    /// plus the calls around the provider — so deadlines nest.
    pub budget: Duration,
    /// One attempt's timeout, as the HTTP client enforces it.
    pub attempt_timeout: Duration,
}

/// The provider budget of one run.
pub const RUN_PROVIDER_BUDGET: Duration = Duration::from_secs(100);

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            max_attempts: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            budget: RUN_PROVIDER_BUDGET,
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

impl Policy {
    /// The pause before attempt `attempt + 1` (1-based `attempt` just failed):
    /// the provider's `Retry-After` when it gave one, else a random share of
    /// `base · 2^(attempt-1)`, never more than `max_delay`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        exp.min(self.max_delay).mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// Runs `call` until it succeeds, fails for good, or attempts run out;
    /// the final error counts the attempts made.
    pub async fn run<F, Fut, T>(&self, mut call: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let started = tokio::time::Instant::now();
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(e) if e.is_transient() && attempt < self.max_attempts => {
                    let retry_after = match &e {
                        ProviderError::RateLimited { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let pause = self.delay(attempt, retry_after, jitter());
                    if started.elapsed() + pause + self.attempt_timeout > self.budget {
                        return Err(with_attempts(e, attempt));
                    }
                    tracing::info!(attempt, error = %e, ?pause, "provider call failed; retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(with_attempts(e, attempt)),
            }
        }
    }
}

fn with_attempts(e: ProviderError, attempts: u32) -> ProviderError {
    match e {
        ProviderError::RateLimited { retry_after, .. } => ProviderError::RateLimited {
            attempts,
            retry_after,
        },
        ProviderError::Upstream { status, .. } => ProviderError::Upstream { status, attempts },
        other => other,
    }
}

/// A uniform share in [0, 1): spreads retries of many conversations apart.
fn jitter() -> f64 {
    let mut byte = [0u8; 2];
    match aws_lc_rs::rand::fill(&mut byte) {
        Ok(()) => f64::from(u16::from_le_bytes(byte)) / 65_536.0,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_honours_retry_after() {
        let policy = Policy::default();
        assert_eq!(policy.delay(1, None, 1.0), Duration::from_millis(250));
        assert_eq!(policy.delay(2, None, 1.0), Duration::from_millis(500));
        assert_eq!(policy.delay(3, None, 0.5), Duration::from_millis(500));
        assert_eq!(policy.delay(20, None, 1.0), Duration::from_secs(8));
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(2)), 0.0),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(600)), 0.0),
            Duration::from_secs(8)
        );
    }

    fn quick(max_attempts: u32) -> Policy {
        Policy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..Policy::default()
        }
    }

    // Paused time: the clock moves only by the sleeps, whatever the load.
    #[tokio::test(start_paused = true)]
    async fn no_attempt_starts_that_could_not_finish_within_the_budget() {
        let calls = AtomicU32::new(0);
        let policy = Policy {
            max_attempts: 10,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            budget: Duration::from_millis(1000),
            attempt_timeout: Duration::from_millis(500),
        };
        let result: Result<(), _> = policy
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err(ProviderError::Upstream {
                    status: 503,
                    attempts: 1,
                })
            })
            .await;
        // 200 ms per failed attempt, 500 ms for the next one: after the
        // second (400 + 500 < 1000) one more starts; after the third
        // (600 + 500 > 1000) none does, though 10 were allowed.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(matches!(
            result,
            Err(ProviderError::Upstream { attempts: 3, .. })
        ));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_counted() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = quick(3)
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(ProviderError::Upstream {
                    status: 503,
                    attempts: 1,
                })
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(matches!(
            result,
            Err(ProviderError::Upstream { attempts: 3, .. })
        ));

        let calls = AtomicU32::new(0);
        let result = quick(3)
            .run(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(ProviderError::RateLimited {
                        attempts: 1,
                        retry_after: Some(Duration::from_millis(1)),
                    })
                } else {
                    Ok("answer")
                }
            })
            .await;
        assert_eq!(result, Ok("answer"));
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = quick(3)
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(ProviderError::Unauthorized { status: 401 })
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(result, Err(ProviderError::Unauthorized { .. })));
    }
}
