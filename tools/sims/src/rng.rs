//! Small deterministic random numbers (SplitMix64) for the simulators.
//!
//! The generated org and the injected faults must be identical for the same seed across runs,
//! platforms and dependency upgrades, so the simulators use this tiny, fully specified generator
//! instead of a library RNG whose output stream may change between versions.

/// Mixes one 64-bit value into a well-distributed one (the SplitMix64 finaliser).
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A SplitMix64 stream: cheap to create, so one can be made per generated record.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    /// A stream determined entirely by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A stream for item `index` of the family `seed`; streams of neighbouring indices are unrelated.
    pub(crate) fn for_item(seed: u64, index: u64) -> Self {
        Self(mix(seed ^ mix(index.wrapping_add(0x9E37_79B9_7F4A_7C15))))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `per_mille / 1000`.
    pub(crate) fn per_mille(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// A float in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `rate` (clamped to `[0, 1]`; NaN counts as 0).
    pub(crate) fn chance(&mut self, rate: f64) -> bool {
        if rate.is_nan() || rate <= 0.0 {
            return false;
        }
        self.unit() < rate
    }

    /// One element of a non-empty slice.
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = self.below(items.len() as u64) as usize;
        &items[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_stream() {
        let mut a = SplitMix::for_item(42, 7);
        let mut b = SplitMix::for_item(42, 7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(SplitMix::for_item(42, 8).next_u64(), xs[0]);
    }

    #[test]
    fn chance_respects_the_extremes() {
        let mut r = SplitMix::new(1);
        assert!((0..1000).all(|_| !r.chance(0.0)));
        assert!((0..1000).all(|_| r.chance(1.0)));
        assert!((0..1000).all(|_| !r.chance(f64::NAN)));
        let hits = (0..10_000).filter(|_| r.chance(0.3)).count();
        assert!((2_500..3_500).contains(&hits), "{hits}");
    }

    #[test]
    fn unit_stays_in_range() {
        let mut r = SplitMix::new(9);
        assert!(
            (0..10_000)
                .map(|_| r.unit())
                .all(|x| (0.0..1.0).contains(&x))
        );
    }
}
