//! Every number the command line takes, as a type that can only hold a value in its
//! documented range.
//!
//! Each type parses from a flag or an environment variable (`FromStr`, which clap uses)
//! and from `config.toml` (`Deserialize` through `try_from`), so a value out of range is
//! refused with the same message, before anything runs, wherever it came from. The
//! bounds keep every later conversion safe: a tokio semaphore has a maximum, and
//! `Duration::from_secs_f64` panics on NaN, infinities and values past `u64::MAX`
//! seconds; buffers sized from these values stay allocatable.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// An integer type with inclusive bounds.
macro_rules! bounded_integer {
    ($(#[$doc:meta])* $name:ident($t:ty), $what:literal, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "i64")]
        pub struct $name(pub $t);

        impl $name {
            pub const MIN: $t = $min;
            pub const MAX: $t = $max;

            fn check(v: i128) -> Result<Self, String> {
                if (Self::MIN as i128..=Self::MAX as i128).contains(&v) {
                    // In range, so the conversion is exact.
                    Ok(Self(v as $t))
                } else {
                    Err(Self::range_error(&v.to_string()))
                }
            }

            fn range_error(got: &str) -> String {
                format!(
                    "{} must be a whole number from {} to {}, not {}",
                    $what,
                    Self::MIN,
                    Self::MAX,
                    sealpipe::escape::text(got)
                )
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let v: i128 = s.trim().parse().map_err(|_| Self::range_error(s))?;
                Self::check(v)
            }
        }

        impl TryFrom<i64> for $name {
            type Error = String;
            fn try_from(v: i64) -> Result<Self, String> {
                Self::check(i128::from(v))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

/// A real number type with bounds; `min_open` excludes the minimum itself.
macro_rules! bounded_real {
    ($(#[$doc:meta])* $name:ident, $what:literal, $min:expr, $min_open:expr, $max:expr, $unit:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
        #[serde(try_from = "f64")]
        pub struct $name(f64);

        impl $name {
            pub const MIN: f64 = $min;
            pub const MAX: f64 = $max;

            fn check(v: f64) -> Result<Self, String> {
                let above_min = if $min_open { v > Self::MIN } else { v >= Self::MIN };
                // NaN fails both comparisons.
                if above_min && v <= Self::MAX {
                    Ok(Self(v))
                } else {
                    Err(Self::range_error(&v.to_string()))
                }
            }

            fn range_error(got: &str) -> String {
                let (low, high) = if $min_open {
                    ("more than", "and at most")
                } else {
                    ("from", "to")
                };
                format!(
                    "{} must be {low} {} {high} {} {}, not {}",
                    $what,
                    Self::MIN,
                    Self::MAX,
                    $unit,
                    sealpipe::escape::text(got)
                )
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let v: f64 = s.trim().parse().map_err(|_| Self::range_error(s))?;
                Self::check(v)
            }
        }

        impl TryFrom<f64> for $name {
            type Error = String;
            fn try_from(v: f64) -> Result<Self, String> {
                Self::check(v)
            }
        }
    };
}

/// A byte count with inclusive bounds, written `8388608`, `8MiB`, `1.5GiB`; in the
/// config file a number or such a string.
macro_rules! bounded_size {
    ($(#[$doc:meta])* $name:ident, $what:literal, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "SizeValue")]
        pub struct $name(pub u64);

        impl $name {
            pub const MIN: u64 = $min;
            pub const MAX: u64 = $max;

            fn check(v: u64) -> Result<Self, String> {
                if (Self::MIN..=Self::MAX).contains(&v) {
                    Ok(Self(v))
                } else {
                    Err(format!(
                        "{} must be from {} to {}, not {v} bytes",
                        $what,
                        human(Self::MIN),
                        human(Self::MAX),
                    ))
                }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::check(parse_size(s)?)
            }
        }

        impl TryFrom<SizeValue> for $name {
            type Error = String;
            fn try_from(v: SizeValue) -> Result<Self, String> {
                match v {
                    SizeValue::Bytes(n) => {
                        Self::check(u64::try_from(n).map_err(|_| format!("{n} is not a size"))?)
                    }
                    SizeValue::Text(s) => s.parse(),
                }
            }
        }
    };
}

bounded_integer!(
    /// `bench --objects`: a workload of at least one object, at most ten million (each
    /// is a file in the benchmark's tree).
    BenchObjects(u64),
    "the number of objects",
    1,
    10_000_000
);

bounded_integer!(
    /// Objects processed at once: `--concurrency`, `SEALPIPE_CONCURRENCY`,
    /// `[runtime] concurrency`.
    Concurrency(usize),
    "concurrency",
    1,
    sealpipe::pipeline::MAX_CONCURRENCY
);

bounded_integer!(
    /// Plaintext bytes per frame (`--frame-len`, `[encrypt] frame_length`) and the
    /// largest frame a reader accepts (`--max-frame-len`, `[decrypt] max_frame_length`):
    /// the format's own range.
    FrameLength(u32),
    "the frame length",
    1,
    sealpipe::format::MAX_FRAME_LENGTH
);

bounded_integer!(
    /// `--max-encrypted-data-keys`, `[decrypt] max_encrypted_data_keys`: a message
    /// needs at least one, the format holds at most 65535.
    MaxDataKeys(u16),
    "the maximum of encrypted data keys",
    1,
    u16::MAX
);

bounded_integer!(
    /// `--max-header-size`, `[decrypt] max_header_size`: up to 1 GiB (the header is read
    /// into memory).
    HeaderSize(usize),
    "the maximum header size",
    1,
    1 << 30
);

bounded_integer!(
    /// `--cache-max-messages`, `[cache] max_messages`: up to 2^32, the ESDK's own limit
    /// of messages per data key.
    CacheMessages(u64),
    "messages per data key",
    1,
    1 << 32
);

bounded_integer!(
    /// `--cache-max-bytes`, `[cache] max_bytes`.
    CacheBytes(u64),
    "bytes per data key",
    1,
    u64::MAX
);

bounded_integer!(
    /// `bench --size`: 1 byte to 1 GiB; the benchmark holds about four copies of at
    /// least 64 MiB of messages.
    BenchSize(usize),
    "the message size",
    1,
    sealpipe::bench::MAX_MESSAGE_SIZE
);

bounded_integer!(
    /// `bench --frame-len`: 1 byte to 64 MiB (each thread holds a frame).
    BenchFrameLength(u32),
    "the frame length",
    1,
    sealpipe::bench::MAX_FRAME_LENGTH
);

bounded_integer!(
    /// `bench --threads`: 0 (one per core) to 1024.
    BenchThreads(usize),
    "the thread count",
    0,
    sealpipe::bench::MAX_THREADS
);

bounded_real!(
    /// `--kms-rate`, `SEALPIPE_KMS_RATE`, `[aws] kms_rate`: KMS requests per second.
    /// At least 0.01 (one every 100 s), at most a million: the rates the library's
    /// limiter takes.
    KmsRate,
    "the KMS rate",
    *sealpipe::retry::RateLimiter::RATES.start(),
    false,
    *sealpipe::retry::RateLimiter::RATES.end(),
    "requests per second"
);

bounded_real!(
    /// A wait in seconds, 0 to one day: `--kms-retry-max-delay`, `--kms-retry-total`
    /// and their `[aws]` keys.
    Delay,
    "a retry wait",
    0.0,
    false,
    86_400.0,
    "seconds"
);

bounded_real!(
    /// How long a data key lives, more than 0 and up to one day: `--cache-max-age`,
    /// `[cache] max_age_seconds`.
    Age,
    "a data key's age",
    0.0,
    true,
    86_400.0,
    "seconds"
);

bounded_real!(
    /// `bench --seconds`: 0 to one hour per figure.
    BenchSeconds,
    "the time per figure",
    0.0,
    false,
    3_600.0,
    "seconds"
);

bounded_size!(
    /// `--part-size`, `[s3] part_size`: S3's own part limits, 5 MiB to 5 GiB.
    PartSize,
    "the part size",
    sealpipe::store::MIN_PART_SIZE,
    5 << 30
);

bounded_size!(
    /// `rewrap --copy-threshold`: S3 objects larger than this have S3 copy their body;
    /// from S3's minimum part (smaller objects are one part anyway) to its largest object.
    CopyThreshold,
    "the copy threshold",
    sealpipe::store::MIN_PART_SIZE,
    5 << 40
);

bounded_size!(
    /// `--max-in-flight`, `[s3] max_in_flight`: 10 MiB (two of the smallest parts) to
    /// 1 TiB.
    InFlight,
    "bytes in flight",
    10 << 20,
    1 << 40
);

/// Every bounded real number is a duration in seconds or a rate; these conversions
/// cannot fail, because the bounds keep the value finite, non-negative and far below
/// `u64::MAX` seconds.
macro_rules! seconds {
    ($($name:ident),*) => {$(
        impl $name {
            pub fn duration(self) -> Duration {
                Duration::from_secs_f64(self.0)
            }
        }
    )*};
}
seconds!(Delay, Age, BenchSeconds);

impl KmsRate {
    /// Requests per second.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A size in the config file: a number of bytes or a string with a unit.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(i64),
    Text(String),
}

/// Parses `8388608`, `8MiB`, `8M`, `1.5GiB`, `512KiB` exactly (no floating point: a
/// count past 2^53 keeps every digit); fractions of a byte are dropped.
pub fn parse_size(s: &str) -> Result<u64, String> {
    // `{:?}` escapes controls itself.
    let not_a_size = || format!("{s:?} is not a size (e.g. 8MiB, 512KiB, 1GiB, 1048576)");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if !number.contains(|c: char| c.is_ascii_digit()) {
        return Err(not_a_size());
    }
    let scale: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    // 19 digits of a fraction still fit a u128 product with any scale above.
    if fraction.contains('.') || fraction.len() > 19 {
        return Err(not_a_size());
    }
    let out_of_range = || format!("{s:?} is more than {} bytes", u64::MAX);
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        // Digits only, so a parse failure can only mean too many of them.
        whole.parse().map_err(|_| out_of_range())?
    };
    let mut bytes = whole.checked_mul(scale).ok_or_else(out_of_range)?;
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().map_err(|_| not_a_size())?;
        let denominator = 10u128.pow(fraction.len() as u32);
        bytes = bytes
            .checked_add(digits * scale / denominator)
            .ok_or_else(out_of_range)?;
    }
    u64::try_from(bytes).map_err(|_| out_of_range())
}

/// `n` bytes in the largest binary unit that divides it.
fn human(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_exactly_or_not_at_all() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size(" 512k "), Ok(512 << 10));
        assert_eq!(parse_size("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_size(".5KiB"), Ok(512));
        for bad in [
            "18446744073709551616",
            "9999999999TiB",
            "1e400GiB",
            "-1",
            "nan",
            "inf",
            "",
            ".",
            "1.2.3",
            "1 parsec",
            "99999999999999999999999999999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_kind_refuses_what_would_overflow_later() {
        assert!("4611686018427387904".parse::<Concurrency>().is_err());
        assert!("0".parse::<Concurrency>().is_err());
        assert_eq!("65536".parse::<Concurrency>(), Ok(Concurrency(65_536)));
        assert!("0".parse::<FrameLength>().is_err());
        assert!("2147483648".parse::<FrameLength>().is_err());
        assert!("0".parse::<MaxDataKeys>().is_err());
        for bad in ["1e300", "nan", "inf", "-inf", "-1", "86400.5", ""] {
            assert!(bad.parse::<Delay>().is_err(), "{bad:?}");
            assert!(bad.parse::<Age>().is_err(), "{bad:?}");
        }
        assert!("0".parse::<Age>().is_err());
        assert_eq!("0".parse::<Delay>().unwrap().duration(), Duration::ZERO);
        for bad in ["0", "nan", "inf", "-1", "1e300", "0.001"] {
            assert!(bad.parse::<KmsRate>().is_err(), "{bad:?}");
        }
        assert!("4GiB".parse::<PartSize>().is_ok());
        assert!("4MiB".parse::<PartSize>().is_err());
        assert!("9999999TiB".parse::<InFlight>().is_err());
        assert!(PartSize::try_from(SizeValue::Bytes(-1)).is_err());
    }
}

bounded_size!(
    /// `serve --max-body`, `[serve] max_body`: the largest `/v1/encrypt` or
    /// `/v1/decrypt` body, 1 byte to 1 TiB.
    BodySize,
    "the largest body",
    1,
    1 << 40
);

bounded_size!(
    /// `serve --max-in-memory`, `[serve] max_in_memory`: decrypted plaintext held in
    /// memory before it spills to a file, 0 to 4 GiB.
    HeldSize,
    "the in-memory plaintext limit",
    0,
    4 << 30
);

bounded_integer!(
    /// `serve --max-concurrent`, `[serve] max_concurrent`: requests answered at once.
    ServeConcurrency(usize),
    "the request cap",
    1,
    65_536
);

bounded_real!(
    /// `serve --token-rate`, `[serve] token_rate`: requests per second per token.
    TokenRate,
    "the token rate",
    0.01,
    false,
    1e6,
    "requests per second"
);

impl TokenRate {
    /// Requests per second.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A timeout or interval of the server: `30` or `30s` (seconds), `500ms`; from a
/// millisecond to one day. In the config file a number of seconds or such a string.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(try_from = "SecondsValue")]
pub struct Seconds(f64);

/// What the config file may hold for [`Seconds`].
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SecondsValue {
    Number(f64),
    Text(String),
}

impl Seconds {
    /// A millisecond: below it a timeout would end every request before it began.
    const MIN: f64 = 0.001;
    const MAX: f64 = 86_400.0;

    fn check(v: f64, got: &str) -> Result<Self, String> {
        if (Self::MIN..=Self::MAX).contains(&v) {
            Ok(Self(v))
        } else {
            Err(format!(
                "a duration must be from 1ms to {} s (e.g. 30s, 500ms), not {}",
                Self::MAX,
                sealpipe::escape::text(got)
            ))
        }
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs_f64(self.0)
    }
}

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (number, scale) = if let Some(ms) = t.strip_suffix("ms") {
            (ms, 0.001)
        } else if let Some(secs) = t.strip_suffix('s') {
            (secs, 1.0)
        } else {
            (t, 1.0)
        };
        let v: f64 = number
            .trim()
            .parse()
            .map_err(|_| Self::check(f64::NAN, s).unwrap_err())?;
        Self::check(v * scale, s)
    }
}

impl TryFrom<SecondsValue> for Seconds {
    type Error = String;
    fn try_from(v: SecondsValue) -> Result<Self, String> {
        match v {
            SecondsValue::Number(n) => Self::check(n, &n.to_string()),
            SecondsValue::Text(s) => s.parse(),
        }
    }
}
