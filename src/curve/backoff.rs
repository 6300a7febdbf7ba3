//! Retry delays: exponential backoff with ±10 % jitter for OVERLOAD and failures (curve-tgt.md
//! §7.5), so many pieces retried at once do not hit a busy chunk server in lockstep.

use std::time::Duration;

/// A small xorshift generator for jitter: not for secrets, cheap and lock-free per owner.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the OS, falling back to a constant.
    pub fn new() -> Jitter {
        let mut b = [0u8; 8];
        let _ = getrandom::getrandom(&mut b);
        Jitter(u64::from_le_bytes(b) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// `base * 2^(attempt-1)`, capped at `max`, then scaled by a random factor in [0.9, 1.1].
    pub fn backoff(&mut self, base: Duration, max: Duration, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(20);
        let raw = base.saturating_mul(1u32 << shift).min(max);
        let permille = 900 + (self.next() % 201) as u32;
        raw.saturating_mul(permille) / 1000
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters_within_ten_percent() {
        let mut j = Jitter::new();
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(8);
        for attempt in 1..40 {
            let d = j.backoff(base, max, attempt);
            let raw = base.saturating_mul(1 << (attempt - 1).min(20)).min(max);
            assert!(
                d >= raw * 9 / 10 && d <= raw * 11 / 10,
                "attempt {attempt}: {d:?}"
            );
        }
        assert!(j.backoff(base, max, 100) <= max * 11 / 10);
    }
}
