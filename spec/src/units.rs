//! Physical quantities as newtypes so that cycles, bytes, energy and bandwidth cannot be mixed up.

use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign, Mul, Sub};

macro_rules! quantity {
    ($(#[$doc:meta])* $name:ident($inner:ty) $(, $extra:ident)*) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd, Serialize, Deserialize $(, $extra)*)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl Add for $name {
            type Output = Self;
            fn add(self, rhs: Self) -> Self {
                Self(self.0 + rhs.0)
            }
        }
        impl AddAssign for $name {
            fn add_assign(&mut self, rhs: Self) {
                self.0 += rhs.0;
            }
        }
        impl Sub for $name {
            type Output = Self;
            fn sub(self, rhs: Self) -> Self {
                Self(self.0 - rhs.0)
            }
        }
        impl Mul<$inner> for $name {
            type Output = Self;
            fn mul(self, rhs: $inner) -> Self {
                Self(self.0 * rhs)
            }
        }
        impl std::iter::Sum for $name {
            fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
                iter.fold(Self::default(), |a, b| a + b)
            }
        }
    };
}

quantity!(
    /// A whole number of clock cycles of the accelerator's clock.
    Cycles(u64),
    Eq,
    Ord,
    Hash
);
quantity!(
    /// A number of bytes (storage or traffic).
    Bytes(u64),
    Eq,
    Ord,
    Hash
);
quantity!(
    /// Energy in picojoules.
    PicoJoules(f64)
);
quantity!(
    /// Time in seconds.
    Seconds(f64)
);
quantity!(
    /// Bandwidth in bytes per second.
    BytesPerSecond(f64)
);
quantity!(
    /// Frequency in hertz.
    Hertz(f64)
);

impl PicoJoules {
    /// The same energy in joules.
    pub fn joules(self) -> f64 {
        self.0 * 1e-12
    }
}

impl Hertz {
    /// Seconds taken by `cycles` cycles at this frequency.
    pub fn seconds(self, cycles: Cycles) -> Seconds {
        Seconds(cycles.0 as f64 / self.0)
    }
    /// Whole cycles needed to cover `t` (rounded up).
    pub fn cycles_for(self, t: Seconds) -> Cycles {
        Cycles((t.0 * self.0).ceil() as u64)
    }
}

impl BytesPerSecond {
    /// Seconds to move `bytes` at this bandwidth.
    pub fn seconds_for(self, bytes: Bytes) -> Seconds {
        if bytes.0 == 0 {
            Seconds(0.0)
        } else {
            Seconds(bytes.0 as f64 / self.0)
        }
    }
    /// Gigabytes (10^9 bytes) per second, for display.
    pub fn gb_per_s(self) -> f64 {
        self.0 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        let f = Hertz(250e6);
        assert_eq!(f.seconds(Cycles(250)).0, 1e-6);
        assert_eq!(f.cycles_for(Seconds(1e-6)), Cycles(250));
        assert_eq!(BytesPerSecond(1e9).seconds_for(Bytes(500)).0, 5e-7);
        assert_eq!(PicoJoules(2e12).joules(), 2.0);
        assert_eq!(Bytes(3) + Bytes(4), Bytes(7));
        assert_eq!(
            [Cycles(1), Cycles(2)].into_iter().sum::<Cycles>(),
            Cycles(3)
        );
    }
}
