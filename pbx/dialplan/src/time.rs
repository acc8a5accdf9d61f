//! Time-of-day, day-of-week and date conditions in an IANA time zone. The instant to test is
//! always an argument (the engine passes the call's arrival time; tests pass fixed ones):
//! nothing here reads a clock.
//!
//! Each part is evaluated on the local date and time of that instant: `days = "mon-fri"`
//! with `time = "22:00-06:00"` holds on Monday 23:00 and on Tuesday 03:00, not on
//! Saturday 03:00. Time ranges are half-open (`09:00-18:00` holds at 09:00, not at 18:00).

use std::fmt;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Why a time, day or date value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    #[error("`{0}` is not a time range like `09:00-18:00`")]
    BadTimeRange(String),
    #[error("`{0}` is not a day or day range like `mon-fri` (mon, tue, wed, thu, fri, sat, sun)")]
    BadDays(String),
    #[error("`{0}` is not a date or date range like `2026-12-24`, `2026-12-24..2027-01-06` or `12-25` (every year)")]
    BadDate(String),
    #[error("the range `{0}` is empty (its start equals its end)")]
    EmptyRange(String),
    #[error("`{0}` is not a time like `2026-11-23T09:00` (in the plan's time zone) or `2026-11-23T08:00Z`")]
    BadInstant(String),
    #[error("the date range `{0}` ends before it starts")]
    BackwardDates(String),
}

/// A half-open range of minutes after local midnight; `end < start` wraps past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    start: u16,
    end: u16,
}

impl TimeRange {
    pub fn parse(text: &str) -> Result<TimeRange, TimeError> {
        let bad = || TimeError::BadTimeRange(text.to_string());
        let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
        let minutes = |s: &str| -> Option<u16> {
            let (h, m) = s.trim().split_once(':')?;
            if h.is_empty() || h.len() > 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
        };
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start == 24 * 60 {
            return Err(bad());
        }
        if start == end {
            return Err(TimeError::EmptyRange(text.to_string()));
        }
        Ok(TimeRange { start, end })
    }

    fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A set of weekdays, bit 0 = Monday.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Days(u8);

impl Days {
    /// `mon`, `mon-fri`, `fri-mon` (wrapping), or several joined by commas.
    pub fn parse(text: &str) -> Result<Days, TimeError> {
        let bad = || TimeError::BadDays(text.to_string());
        let day = |s: &str| {
            let s = s.trim().to_ascii_lowercase();
            (0..7)
                .find(|&i| s == DAY_NAMES[i] || s == FULL_DAY_NAMES[i])
                .ok_or_else(bad)
        };
        let mut mask = 0u8;
        for item in text.split(',') {
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut d = a;
                    loop {
                        mask |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => mask |= 1 << day(item)?,
            }
        }
        Ok(Days(mask))
    }

    fn union(self, other: Days) -> Days {
        Days(self.0 | other.0)
    }

    fn contains(&self, day: Weekday) -> bool {
        self.0 & (1 << (day.to_monday_zero_offset() as u8)) != 0
    }
}

const FULL_DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = (0..7)
            .filter(|d| self.0 & (1 << d) != 0)
            .map(|d| DAY_NAMES[d])
            .collect();
        f.write_str(&names.join(","))
    }
}

/// An inclusive range of dates, either absolute or the same days every year.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DateRange {
    Absolute {
        first: Date,
        last: Date,
    },
    /// (month, day) pairs; `last < first` wraps over New Year.
    Yearly {
        first: (i8, i8),
        last: (i8, i8),
    },
}

impl DateRange {
    /// `2026-12-24`, `2026-12-24..2027-01-06`, `12-25`, `12-24..12-26`.
    pub fn parse(text: &str) -> Result<DateRange, TimeError> {
        let bad = || TimeError::BadDate(text.to_string());
        let (a, b) = match text.split_once("..") {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (text.trim(), text.trim()),
        };
        let absolute =
            |s: &str| -> Option<Date> { (s.len() == 10).then(|| s.parse::<Date>().ok()).flatten() };
        let yearly = |s: &str| -> Option<(i8, i8)> {
            let (m, d) = s.split_once('-')?;
            if m.len() != 2 || d.len() != 2 {
                return None;
            }
            let (m, d): (i8, i8) = (m.parse().ok()?, d.parse().ok()?);
            // 2024 is a leap year, so 02-29 is accepted.
            Date::new(2024, m, d).ok().map(|_| (m, d))
        };
        if let (Some(first), Some(last)) = (absolute(a), absolute(b)) {
            if last < first {
                return Err(TimeError::BackwardDates(text.to_string()));
            }
            return Ok(DateRange::Absolute { first, last });
        }
        if let (Some(first), Some(last)) = (yearly(a), yearly(b)) {
            return Ok(DateRange::Yearly { first, last });
        }
        Err(bad())
    }

    fn contains(&self, date: Date) -> bool {
        match self {
            DateRange::Absolute { first, last } => *first <= date && date <= *last,
            DateRange::Yearly { first, last } => {
                let md = (date.month(), date.day());
                if first <= last {
                    *first <= md && md <= *last
                } else {
                    md >= *first || md <= *last
                }
            }
        }
    }
}

impl fmt::Display for DateRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DateRange::Absolute { first, last } if first == last => write!(f, "{first}"),
            DateRange::Absolute { first, last } => write!(f, "{first}..{last}"),
            DateRange::Yearly { first, last } if first == last => {
                write!(f, "{:02}-{:02}", first.0, first.1)
            }
            DateRange::Yearly { first, last } => write!(
                f,
                "{:02}-{:02}..{:02}-{:02}",
                first.0, first.1, last.0, last.1
            ),
        }
    }
}

/// All the time parts of one route: every part given must hold (a part with several values
/// holds when any value does).
#[derive(Clone, Debug)]
pub struct TimeCondition {
    pub zone_name: String,
    pub zone: TimeZone,
    pub times: Vec<TimeRange>,
    pub days: Option<Days>,
    pub dates: Vec<DateRange>,
}

impl TimeCondition {
    /// Adds a `days` value (several values are a union).
    pub fn add_days(&mut self, days: Days) {
        self.days = Some(match self.days {
            Some(d) => d.union(days),
            None => days,
        });
    }

    /// Whether the condition holds at `at`.
    pub fn holds_at(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.zone.clone());
        let minute = (local.hour() as u16) * 60 + local.minute() as u16;
        (self.times.is_empty() || self.times.iter().any(|t| t.contains(minute)))
            && self.days.is_none_or(|d| d.contains(local.weekday()))
            && (self.dates.is_empty() || self.dates.iter().any(|d| d.contains(local.date())))
    }
}

impl PartialEq for TimeCondition {
    fn eq(&self, other: &Self) -> bool {
        self.zone_name == other.zone_name
            && self.times == other.times
            && self.days == other.days
            && self.dates == other.dates
    }
}

impl fmt::Display for TimeCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.times.is_empty() {
            let t: Vec<String> = self.times.iter().map(|t| t.to_string()).collect();
            parts.push(format!("time {}", t.join(",")));
        }
        if let Some(d) = self.days {
            parts.push(format!("days {d}"));
        }
        if !self.dates.is_empty() {
            let d: Vec<String> = self.dates.iter().map(|d| d.to_string()).collect();
            parts.push(format!("dates {}", d.join(",")));
        }
        write!(f, "{} ({})", parts.join(" "), self.zone_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rome() -> TimeZone {
        jiff::tz::TimeZoneDatabase::bundled()
            .get("Europe/Rome")
            .unwrap()
    }

    fn cond(times: &[&str], days: Option<&str>, dates: &[&str]) -> TimeCondition {
        TimeCondition {
            zone_name: "Europe/Rome".into(),
            zone: rome(),
            times: times.iter().map(|t| TimeRange::parse(t).unwrap()).collect(),
            days: days.map(|d| Days::parse(d).unwrap()),
            dates: dates.iter().map(|d| DateRange::parse(d).unwrap()).collect(),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn office_hours_in_the_zone_not_in_utc() {
        let office = cond(&["09:00-18:00"], Some("mon-fri"), &[]);
        // Monday 2026-11-23 09:00 in Rome is 08:00 UTC (CET, +01:00).
        assert!(office.holds_at(at("2026-11-23T08:00:00Z")));
        assert!(!office.holds_at(at("2026-11-23T07:59:00Z")));
        assert!(
            !office.holds_at(at("2026-11-23T17:00:00Z")),
            "18:00 is excluded"
        );
        // Saturday.
        assert!(!office.holds_at(at("2026-11-28T10:00:00Z")));
        // Summer time: 09:00 in Rome is 07:00 UTC (CEST, +02:00).
        assert!(office.holds_at(at("2026-07-01T07:00:00Z")));
    }

    #[test]
    fn overnight_ranges_wrap() {
        let night = cond(&["22:00-06:00"], None, &[]);
        assert!(night.holds_at(at("2026-11-23T22:30:00Z"))); // 23:30 local
        assert!(night.holds_at(at("2026-11-24T04:00:00Z"))); // 05:00 local
        assert!(!night.holds_at(at("2026-11-24T05:00:00Z"))); // 06:00 local
        assert!(TimeRange::parse("00:00-24:00")
            .unwrap()
            .contains(23 * 60 + 59));
    }

    #[test]
    fn days_and_dates() {
        assert_eq!(
            Days::parse("fri-mon").unwrap().to_string(),
            "mon,fri,sat,sun"
        );
        assert_eq!(Days::parse("Sat, sunday").unwrap().to_string(), "sat,sun");
        let xmas = cond(&[], None, &["12-24..12-26", "2027-01-06"]);
        assert!(xmas.holds_at(at("2026-12-25T12:00:00Z")));
        assert!(xmas.holds_at(at("2027-01-06T12:00:00Z")));
        assert!(!xmas.holds_at(at("2027-01-07T12:00:00Z")));
        let new_year = cond(&[], None, &["12-31..01-01"]);
        assert!(new_year.holds_at(at("2026-12-31T22:30:00Z"))); // already Jan 1 in Rome
        assert!(!new_year.holds_at(at("2027-01-02T12:00:00Z")));
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(
            TimeRange::parse("9-18"),
            Err(TimeError::BadTimeRange(_))
        ));
        assert!(matches!(
            TimeRange::parse("09:00-09:00"),
            Err(TimeError::EmptyRange(_))
        ));
        assert!(matches!(
            TimeRange::parse("24:00-01:00"),
            Err(TimeError::BadTimeRange(_))
        ));
        assert!(matches!(Days::parse("mon-fry"), Err(TimeError::BadDays(_))));
        assert!(matches!(
            DateRange::parse("2026-13-01"),
            Err(TimeError::BadDate(_))
        ));
        assert!(matches!(
            DateRange::parse("2026-12-26..2026-12-24"),
            Err(TimeError::BackwardDates(_))
        ));
    }
}
