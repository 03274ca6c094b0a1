//! Human units for config values: byte sizes ("64 MiB"), durations ("30s") and "unlimited".
//!
//! Each type parses from a string with [`FromStr`] and prints with [`Display`] in a form that
//! parses back to the same value, so an effective config can be printed and reloaded.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why a size, duration or limit could not be parsed. The message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseUnitError(String);

impl ParseUnitError {
    fn new(input: &str, why: impl fmt::Display) -> Self {
        Self(format!("invalid {}: {why}", Quoted(input)))
    }
}

struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Splits `"  64 MiB"` into `(64, "MiB")` and `"1h30m"` into `(1, "h30m")`: a leading decimal
/// integer, then whatever follows it with surrounding spaces removed.
fn leading_number(input: &str) -> Result<(u128, &str), ParseUnitError> {
    let text = input.trim_start();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(ParseUnitError::new(input, "expected a number"));
    }
    let number = text[..digits]
        .parse::<u128>()
        .map_err(|_| ParseUnitError::new(input, "number too large"))?;
    let rest = text[digits..].trim_start();
    if rest.starts_with('.') || rest.starts_with(',') {
        return Err(ParseUnitError::new(
            input,
            "fractions are not supported; use a smaller unit",
        ));
    }
    Ok((number, rest))
}

// ---------------------------------------------------------------------------------------------
// Size

/// A number of bytes, written `"512"`, `"512 B"`, `"4 KiB"`, `"100 MiB"`, `"1 GiB"`, `"1 TiB"`
/// (powers of 1024) or `"10 KB"`, `"10 MB"`, `"10 GB"`, `"10 TB"` (powers of 1000). Units are
/// case-insensitive. In TOML a bare integer is also accepted, as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

/// Units in the order `Display` prefers them: binary first (they are what the defaults use),
/// largest first, so the printed number is the smallest exact one.
const SIZE_UNITS: [(&str, u64); 9] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("B", 1),
];

impl Size {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size in bytes as a `usize`, saturating on 32-bit targets (a limit that large means
    /// "no limit" there anyway).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for Size {
    type Err = ParseUnitError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (number, unit) = leading_number(input)?;
        let unit = unit.trim_end();
        let multiplier = if unit.is_empty() {
            1
        } else {
            SIZE_UNITS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(unit))
                .map(|&(_, multiplier)| multiplier)
                .ok_or_else(|| {
                    ParseUnitError::new(
                        input,
                        format!(
                            "unknown size unit {}; expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB",
                            Quoted(unit)
                        ),
                    )
                })?
        };
        u64::try_from(number)
            .ok()
            .and_then(|number| number.checked_mul(multiplier))
            .map(Size)
            .ok_or_else(|| ParseUnitError::new(input, "size too large"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0 B");
        }
        let (unit, multiplier) = SIZE_UNITS
            .iter()
            .find(|(_, multiplier)| self.0.is_multiple_of(*multiplier))
            .copied()
            .unwrap_or(("B", 1));
        write!(f, "{} {unit}", self.0 / multiplier)
    }
}

impl From<u64> for Size {
    fn from(bytes: u64) -> Self {
        Size(bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// HumanDuration

/// A duration, written as a number and a unit: `"250ms"`, `"30s"`, `"10m"`, `"1h"`, `"7d"`
/// (also `"ns"` and `"us"`). Parts add up: `"1h30m"`. A unit is required: a bare `30` is
/// ambiguous and is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Largest first, so `Display` prints the smallest exact number.
const DURATION_UNITS: [(&str, u128); 7] = [
    ("d", 86_400 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }

    /// The duration as a [`Duration`].
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = ParseUnitError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut rest = input;
        let mut total: u128 = 0;
        loop {
            let (number, after_number) = leading_number(rest).map_err(|e| {
                if rest == input {
                    e
                } else {
                    ParseUnitError::new(input, format!("unexpected {}", Quoted(rest.trim())))
                }
            })?;
            let unit_len = after_number
                .bytes()
                .take_while(u8::is_ascii_alphabetic)
                .count();
            let unit = &after_number[..unit_len];
            if unit.is_empty() {
                return Err(ParseUnitError::new(
                    input,
                    "a duration needs a unit, e.g. \"30s\" (units: ms, s, m, h, d)",
                ));
            }
            let nanos = DURATION_UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|&(_, nanos)| nanos)
                .ok_or_else(|| {
                    ParseUnitError::new(
                        input,
                        format!(
                            "unknown duration unit {}; expected ns, us, ms, s, m, h or d",
                            Quoted(unit)
                        ),
                    )
                })?;
            total = number
                .checked_mul(nanos)
                .and_then(|part| total.checked_add(part))
                .ok_or_else(|| ParseUnitError::new(input, "duration too large"))?;
            rest = after_number[unit_len..].trim_start();
            if rest.is_empty() {
                break;
            }
        }
        let secs = u64::try_from(total / NANOS_PER_SEC)
            .map_err(|_| ParseUnitError::new(input, "duration too large"))?;
        // The remainder is below 10^9, so it fits.
        let subsec = u32::try_from(total % NANOS_PER_SEC).unwrap_or(0);
        Ok(HumanDuration(Duration::new(secs, subsec)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        let (unit, per_unit) = DURATION_UNITS
            .iter()
            .find(|(_, per_unit)| nanos.is_multiple_of(*per_unit))
            .copied()
            .unwrap_or(("ns", 1));
        write!(f, "{}{unit}", nanos / per_unit)
    }
}

impl From<Duration> for HumanDuration {
    fn from(duration: Duration) -> Self {
        HumanDuration(duration)
    }
}

impl From<HumanDuration> for Duration {
    fn from(duration: HumanDuration) -> Self {
        duration.0
    }
}

// ---------------------------------------------------------------------------------------------
// Limit

/// A limit that may be switched off, written as its value or as `"unlimited"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit<T> {
    Unlimited,
    Limited(T),
}

impl<T> Limit<T> {
    /// `None` when unlimited.
    pub fn get(&self) -> Option<&T> {
        match self {
            Limit::Unlimited => None,
            Limit::Limited(value) => Some(value),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        matches!(self, Limit::Unlimited)
    }
}

impl<T> From<Limit<T>> for Option<T> {
    fn from(limit: Limit<T>) -> Self {
        match limit {
            Limit::Unlimited => None,
            Limit::Limited(value) => Some(value),
        }
    }
}

const UNLIMITED: &str = "unlimited";

impl<T: FromStr<Err = ParseUnitError>> FromStr for Limit<T> {
    type Err = ParseUnitError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.trim().eq_ignore_ascii_case(UNLIMITED) {
            Ok(Limit::Unlimited)
        } else {
            input
                .parse()
                .map(Limit::Limited)
                .map_err(|ParseUnitError(why)| ParseUnitError(format!("{why}, or \"{UNLIMITED}\"")))
        }
    }
}

impl<T: fmt::Display> fmt::Display for Limit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Unlimited => f.write_str(UNLIMITED),
            Limit::Limited(value) => value.fmt(f),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// serde: every unit type is a string in TOML; sizes also accept an integer number of bytes.

/// What the shared serde visitor needs from a unit type.
trait HumanUnit: FromStr<Err = ParseUnitError> {
    const EXPECTING: &'static str;
    fn from_integer(value: u64) -> Result<Self, String>;
}

impl HumanUnit for Size {
    const EXPECTING: &'static str = "a size such as \"64 MiB\", or a number of bytes";

    fn from_integer(value: u64) -> Result<Self, String> {
        Ok(Size(value))
    }
}

impl HumanUnit for HumanDuration {
    const EXPECTING: &'static str = "a duration such as \"30s\"";

    fn from_integer(value: u64) -> Result<Self, String> {
        Err(format!(
            "a duration needs a unit: write \"{value}s\", \"{value}ms\", … as a string"
        ))
    }
}

impl<T: HumanUnit> HumanUnit for Limit<T> {
    const EXPECTING: &'static str = "a limit, or \"unlimited\"";

    fn from_integer(value: u64) -> Result<Self, String> {
        T::from_integer(value).map(Limit::Limited)
    }
}

struct UnitVisitor<T>(PhantomData<T>);

impl<T: HumanUnit> Visitor<'_> for UnitVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        value.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        T::from_integer(value).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        let value = u64::try_from(value)
            .map_err(|_| E::custom(format!("{value} is negative; expected {}", T::EXPECTING)))?;
        self.visit_u64(value)
    }
}

macro_rules! serde_as_string {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(UnitVisitor(PhantomData))
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    )*};
}

serde_as_string!(Size, HumanDuration);

impl<'de, T: HumanUnit> Deserialize<'de> for Limit<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UnitVisitor(PhantomData))
    }
}

impl<T: fmt::Display> Serialize for Limit<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(s: &str) -> u64 {
        s.parse::<Size>().unwrap().bytes()
    }

    fn duration(s: &str) -> Duration {
        s.parse::<HumanDuration>().unwrap().get()
    }

    #[test]
    fn sizes_parse_binary_decimal_and_bare_bytes() {
        assert_eq!(size("512"), 512);
        assert_eq!(size("512 B"), 512);
        assert_eq!(size("512b"), 512);
        assert_eq!(size("4 KiB"), 4096);
        assert_eq!(size("4KiB"), 4096);
        assert_eq!(size("100 MiB"), 100 * 1024 * 1024);
        assert_eq!(size("1 GiB"), 1 << 30);
        assert_eq!(size("2 TiB"), 2 << 40);
        assert_eq!(size("10 KB"), 10_000);
        assert_eq!(size("10 MB"), 10_000_000);
        assert_eq!(size("10 mb"), 10_000_000);
        assert_eq!(size("3 GB"), 3_000_000_000);
        assert_eq!(size("1 TB"), 1_000_000_000_000);
        assert_eq!(size("  64 mib  "), 64 << 20);
        assert_eq!(size("0"), 0);
    }

    #[test]
    fn bad_sizes_are_refused_with_the_input_quoted() {
        for bad in [
            "",
            "MiB",
            "-1 MiB",
            "1.5 GiB",
            "10 parsecs",
            "1 MiB 2",
            "1 k",
        ] {
            let err = bad.parse::<Size>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        let err = "99999999999 TiB".parse::<Size>().unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit_and_round_trip() {
        let cases = [
            (0, "0 B"),
            (512, "512 B"),
            (4096, "4 KiB"),
            (100 << 20, "100 MiB"),
            (1 << 30, "1 GiB"),
            (10_000_000, "10 MB"),
            (1500, "1500 B"),
            (3 << 40, "3 TiB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(Size(bytes).to_string(), text);
            assert_eq!(size(text), bytes);
        }
        for bytes in [1, 999, 1024 * 1000, 123_456_789, u64::MAX] {
            assert_eq!(size(&Size(bytes).to_string()), bytes);
        }
    }

    #[test]
    fn durations_parse_every_unit_and_compounds() {
        assert_eq!(duration("500ms"), Duration::from_millis(500));
        assert_eq!(duration("30s"), Duration::from_secs(30));
        assert_eq!(duration("10m"), Duration::from_secs(600));
        assert_eq!(duration("1h"), Duration::from_secs(3600));
        assert_eq!(duration("7d"), Duration::from_secs(7 * 86_400));
        assert_eq!(duration("250us"), Duration::from_micros(250));
        assert_eq!(duration("5ns"), Duration::from_nanos(5));
        assert_eq!(duration("0s"), Duration::ZERO);
        assert_eq!(duration("1h30m"), Duration::from_secs(5400));
        assert_eq!(duration(" 1m 30s "), Duration::from_secs(90));
        assert_eq!(duration("30 s"), Duration::from_secs(30));
    }

    #[test]
    fn bad_durations_are_refused_with_the_input_quoted() {
        for bad in [
            "",
            "30",
            "s",
            "1.5h",
            "10 parsecs",
            "10M",
            "1h 30",
            "1h x",
            "-1s",
        ] {
            let err = bad.parse::<HumanDuration>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        let err = "30".parse::<HumanDuration>().unwrap_err().to_string();
        assert!(err.contains("needs a unit"), "{err}");
    }

    #[test]
    fn durations_display_in_the_largest_exact_unit_and_round_trip() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_micros(1500), "1500us"),
        ];
        for (value, text) in cases {
            assert_eq!(HumanDuration(value).to_string(), text);
            assert_eq!(duration(text), value);
        }
        for value in [
            Duration::from_nanos(1),
            Duration::new(5, 1),
            Duration::from_secs(86_401),
            Duration::new(u64::MAX, 999_999_999),
        ] {
            assert_eq!(duration(&HumanDuration(value).to_string()), value);
        }
    }

    #[test]
    fn limits_accept_unlimited_or_a_value() {
        assert_eq!(
            "unlimited".parse::<Limit<Size>>().unwrap(),
            Limit::Unlimited
        );
        assert_eq!(
            "Unlimited".parse::<Limit<Size>>().unwrap(),
            Limit::Unlimited
        );
        assert_eq!(
            "1 GiB".parse::<Limit<Size>>().unwrap(),
            Limit::Limited(Size(1 << 30))
        );
        assert_eq!(
            "7d".parse::<Limit<HumanDuration>>().unwrap(),
            Limit::Limited(HumanDuration::from_secs(7 * 86_400))
        );
        let err = "forever".parse::<Limit<HumanDuration>>().unwrap_err();
        assert!(err.to_string().ends_with("or \"unlimited\""), "{err}");
        assert_eq!(Limit::<Size>::Unlimited.to_string(), "unlimited");
        assert_eq!(Limit::Limited(Size(4096)).to_string(), "4 KiB");
        assert_eq!(Option::from(Limit::Limited(Size(1))), Some(Size(1)));
        assert_eq!(Option::<Size>::from(Limit::Unlimited), None);
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Units {
        size: Size,
        duration: HumanDuration,
        max_size: Limit<Size>,
        max_age: Limit<HumanDuration>,
    }

    #[test]
    fn units_deserialize_from_toml_strings_and_integer_sizes() {
        let units: Units = toml::from_str(
            "size = 1024\nduration = \"1m\"\nmax_size = 2048\nmax_age = \"unlimited\"",
        )
        .unwrap();
        assert_eq!(
            units,
            Units {
                size: Size(1024),
                duration: HumanDuration::from_secs(60),
                max_size: Limit::Limited(Size(2048)),
                max_age: Limit::Unlimited,
            }
        );
        let text = toml::to_string(&units).unwrap();
        assert!(text.contains("size = \"1 KiB\""), "{text}");
        assert_eq!(toml::from_str::<Units>(&text).unwrap(), units);
    }

    #[test]
    fn integer_durations_and_negative_sizes_are_refused() {
        let err =
            toml::from_str::<Units>("size = 1\nduration = 30\nmax_size = 1\nmax_age = \"1d\"")
                .unwrap_err();
        assert!(err.to_string().contains("needs a unit"), "{err}");
        let err =
            toml::from_str::<Units>("size = -1\nduration = \"1s\"\nmax_size = 1\nmax_age = \"1d\"")
                .unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
    }
}
