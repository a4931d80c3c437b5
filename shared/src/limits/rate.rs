//! A rate as operators write it: `<count>/<s|min|h>[,burst=<n>]` or `off`.

use std::time::Duration;

/// The most calls a rate may allow per period, and the largest burst: enough
/// for any real limit, small enough that the emission interval of the
/// fastest rate (`1000000/s`) is still a whole microsecond.
pub const MAX_COUNT: u32 = 1_000_000;

/// How the syntax reads, quoted in every parse error.
const SYNTAX: &str = "expected `<count>/<s|min|h>[,burst=<n>]` or `off`";

/// A limit on how often one subject may call: `count` calls per `period`,
/// of which up to `burst` may come at once. Without `,burst=`, the burst is
/// `count`: one period's worth at once, which is what `10/min` suggests to
/// a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    period: Period,
    burst: u32,
}

/// The unit of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// `s`
    Second,
    /// `min`
    Minute,
    /// `h`
    Hour,
}

impl Period {
    /// The period's length.
    pub fn duration(self) -> Duration {
        match self {
            Self::Second => Duration::from_secs(1),
            Self::Minute => Duration::from_secs(60),
            Self::Hour => Duration::from_secs(3600),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Second => "s",
            Self::Minute => "min",
            Self::Hour => "h",
        }
    }
}

impl Rate {
    /// `count` per `period` with up to `burst` at once; `None` when either
    /// is zero or above [`MAX_COUNT`].
    pub fn new(count: u32, period: Period, burst: u32) -> Option<Self> {
        let valid = |n: u32| (1..=MAX_COUNT).contains(&n);
        (valid(count) && valid(burst)).then_some(Self {
            count,
            period,
            burst,
        })
    }

    /// Parses a setting: `Ok(None)` for `off`.
    pub fn parse_setting(text: &str) -> Result<Option<Self>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (rate, burst) = match text.split_once(',') {
            Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
            None => (text, None),
        };
        let Some((count, unit)) = rate.split_once('/') else {
            return Err(format!("{text:?}: {SYNTAX}"));
        };
        let count = parse_count(count.trim(), "count", text)?;
        let period = match unit.trim() {
            "s" => Period::Second,
            "min" => Period::Minute,
            "h" => Period::Hour,
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?}, expected `s`, `min` or `h`"
                ));
            }
        };
        let burst = match burst {
            None => count,
            Some(burst) => {
                let Some(("burst", value)) = burst.split_once('=').map(|(k, v)| (k.trim(), v))
                else {
                    return Err(format!("{text:?}: {SYNTAX}"));
                };
                parse_count(value.trim(), "burst", text)?
            }
        };
        Ok(Some(Self {
            count,
            period,
            burst,
        }))
    }

    /// Calls allowed per period.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period `count` is counted over.
    pub fn period(&self) -> Period {
        self.period
    }

    /// Calls allowed at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// GCRA's emission interval: the steady time between two allowed calls.
    /// Rounded down to whole microseconds (at most a microsecond per call
    /// generous).
    pub fn emission_interval(&self) -> Duration {
        let period_micros = self.period.duration().as_micros() as u64;
        Duration::from_micros(period_micros / u64::from(self.count))
    }

    /// How far ahead of now a subject's theoretical arrival time may run
    /// before a call is refused: `burst` emission intervals.
    pub fn burst_window(&self) -> Duration {
        self.emission_interval() * self.burst
    }
}

/// Parses a count or burst (`what`) of the setting `text`.
fn parse_count(digits: &str, what: &str, text: &str) -> Result<u32, String> {
    match digits.parse::<u32>() {
        Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?}: the {what} must be a whole number from 1 to {MAX_COUNT}, got {digits:?}"
        )),
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{},burst={}",
            self.count,
            self.period.unit(),
            self.burst
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> Rate {
        Rate::parse_setting(text)
            .expect("parses")
            .expect("is not off")
    }

    #[test]
    fn the_documented_defaults_parse() {
        assert_eq!(
            rate("100/s,burst=200"),
            Rate::new(100, Period::Second, 200).expect("valid")
        );
        assert_eq!(
            rate("10/min,burst=5"),
            Rate::new(10, Period::Minute, 5).expect("valid")
        );
        assert_eq!(rate("120/min,burst=20").burst(), 20);
        assert_eq!(rate("30/min,burst=10").count(), 30);
    }

    #[test]
    fn every_unit_parses() {
        assert_eq!(rate("1/s").period(), Period::Second);
        assert_eq!(rate("1/min").period(), Period::Minute);
        assert_eq!(rate("1/h").period(), Period::Hour);
    }

    #[test]
    fn the_burst_defaults_to_the_count() {
        assert_eq!(rate("10/min").burst(), 10);
        assert_eq!(rate("7/h").burst(), 7);
    }

    #[test]
    fn off_and_whitespace_are_accepted() {
        assert_eq!(Rate::parse_setting("off"), Ok(None));
        assert_eq!(Rate::parse_setting(" OFF "), Ok(None));
        assert_eq!(rate(" 10 / min , burst = 5 "), rate("10/min,burst=5"));
    }

    #[test]
    fn malformed_settings_are_refused_with_the_reason() {
        let error = |text: &str| Rate::parse_setting(text).expect_err(text);
        assert!(error("").contains("expected"));
        assert!(error("10").contains("expected"));
        assert!(error("10/").contains("unknown unit"));
        assert!(error("10/m").contains("unknown unit \"m\""));
        assert!(error("10/sec").contains("unknown unit"));
        assert!(error("ten/s").contains("the count must be"));
        assert!(error("-1/s").contains("the count must be"));
        assert!(error("0/s").contains("the count must be"));
        assert!(error("1.5/s").contains("the count must be"));
        assert!(error("1000001/s").contains("the count must be"));
        assert!(error("99999999999/s").contains("the count must be"));
        assert!(error("10/s,burst=0").contains("the burst must be"));
        assert!(error("10/s,burst=").contains("the burst must be"));
        assert!(error("10/s,burst=x").contains("the burst must be"));
        assert!(error("10/s,bust=5").contains("expected"));
        assert!(error("10/s,5").contains("expected"));
        assert!(error("10/s,burst=5,burst=6").contains("the burst must be"));
        assert!(error("on").contains("expected"));
    }

    #[test]
    fn gcra_parameters_follow_the_rate() {
        let mint = rate("100/s,burst=200");
        assert_eq!(mint.emission_interval(), Duration::from_millis(10));
        assert_eq!(mint.burst_window(), Duration::from_secs(2));
        let redeem = rate("10/min,burst=5");
        assert_eq!(redeem.emission_interval(), Duration::from_secs(6));
        assert_eq!(redeem.burst_window(), Duration::from_secs(30));
        assert_eq!(
            rate("1000000/s").emission_interval(),
            Duration::from_micros(1)
        );
        assert_eq!(
            rate("3/s").emission_interval(),
            Duration::from_micros(333_333)
        );
    }

    #[test]
    fn rates_display_in_their_own_syntax() {
        assert_eq!(rate("10/min").to_string(), "10/min,burst=10");
        assert_eq!(rate(&rate("5/h,burst=2").to_string()), rate("5/h,burst=2"));
    }

    #[test]
    fn new_refuses_zero_and_too_large() {
        assert!(Rate::new(0, Period::Second, 1).is_none());
        assert!(Rate::new(1, Period::Second, 0).is_none());
        assert!(Rate::new(MAX_COUNT + 1, Period::Second, 1).is_none());
        assert!(Rate::new(MAX_COUNT, Period::Hour, MAX_COUNT).is_some());
    }
}
