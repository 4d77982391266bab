//! CronJob schedules: the standard five-field cron syntax (minute, hour,
//! day of month, month, day of week) with the `@hourly`-style shorthands,
//! as a CronJob's `spec.schedule` is written, and the times they fire in a
//! time zone.
//!
//! The rules are the ones Kubernetes users rely on: `*` and `?`, lists,
//! ranges, steps (`*/15`, `1-30/5`, `5/10` meaning `5-max/10`), month and
//! weekday names (`JAN`, `mon`), Sunday as 0, and when both day fields are
//! restricted a day matches if *either* does (when one of them is `*` or
//! `?`, both must).

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Why a schedule does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("expected exactly 5 fields, found {0}: {1:?}")]
    FieldCount(usize, String),
    #[error("unrecognized descriptor: {0}")]
    Descriptor(String),
    #[error("failed to parse {field} field {value:?}: {why}")]
    Field {
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("TZ and CRON_TZ are not allowed in the schedule; use spec.timeZone")]
    TimeZoneInSchedule,
}

/// One field's bounds and names.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: FieldSpec = FieldSpec {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: FieldSpec = FieldSpec {
    name: "day of week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// The day-of-month field was `*` or `?` (not a step of it).
    days_star: bool,
    /// The day-of-week field was `*` or `?`.
    weekdays_star: bool,
}

/// How far [`Schedule::next_after`] and [`Schedule::last_at_or_before`]
/// look before giving up (a schedule like `0 0 30 2 *` never fires).
const SEARCH_YEARS: i16 = 5;

impl Schedule {
    /// Parses a five-field schedule or a shorthand (`@yearly`, `@annually`,
    /// `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`).
    ///
    /// # Errors
    /// A [`CronError`] naming the field that does not parse.
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let text = text.trim();
        if text.starts_with("TZ=") || text.starts_with("CRON_TZ=") {
            return Err(CronError::TimeZoneInSchedule);
        }
        let expanded = if let Some(d) = text.strip_prefix('@') {
            match d.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => return Err(CronError::Descriptor(text.to_string())),
            }
        } else {
            text
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(CronError::FieldCount(fields.len(), text.to_string()));
        };
        let (days, days_star) = parse_field(dom, &DOM)?;
        let (weekdays, weekdays_star) = parse_field(dow, &DOW)?;
        Ok(Schedule {
            minutes: parse_field(minute, &MINUTE)?.0,
            hours: parse_field(hour, &HOUR)?.0,
            days,
            months: parse_field(month, &MONTH)?.0,
            weekdays,
            days_star,
            weekdays_star,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = bit(self.days, d.day() as u32);
        let dow = bit(
            self.weekdays,
            d.weekday().to_sunday_zero_offset().unsigned_abs() as u32,
        );
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time strictly after `after` at which the schedule fires in
    /// `tz`, or `None` if it fires in none of the next few years.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = truncate_to_minute(after.to_zoned(tz.clone()).datetime());
        let limit = start.year().saturating_add(SEARCH_YEARS);
        let mut t = start.checked_add(1.minute()).ok()?;
        while t.year() <= limit {
            if !bit(self.months, t.month() as u32) {
                t = t
                    .date()
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .into();
            } else if !self.day_matches(t.date()) {
                t = t.date().tomorrow().ok()?.into();
            } else if !bit(self.hours, t.hour() as u32) {
                t = t.date().at(t.hour(), 0, 0, 0).checked_add(1.hour()).ok()?;
            } else if !bit(self.minutes, t.minute() as u32) {
                t = t.checked_add(1.minute()).ok()?;
            } else {
                // A civil time skipped by a DST gap maps to the moment after
                // the gap, which may not be after `after` in rare cases.
                let at = tz.to_ambiguous_timestamp(t).compatible().ok()?;
                if at > after {
                    return Some(at);
                }
                t = t.checked_add(1.minute()).ok()?;
            }
        }
        None
    }

    /// The latest time at or before `at` at which the schedule fires in
    /// `tz`, or `None` if it fired in none of the last few years.
    pub fn last_at_or_before(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = truncate_to_minute(at.to_zoned(tz.clone()).datetime());
        let limit = start.year().saturating_sub(SEARCH_YEARS);
        let mut t = start;
        while t.year() >= limit {
            if !bit(self.months, t.month() as u32) {
                t = last_minute_before(t.date().first_of_month())?;
            } else if !self.day_matches(t.date()) {
                t = last_minute_before(t.date())?;
            } else if !bit(self.hours, t.hour() as u32) {
                t = t
                    .date()
                    .at(t.hour(), 0, 0, 0)
                    .checked_sub(1.minute())
                    .ok()?;
            } else if !bit(self.minutes, t.minute() as u32) {
                t = t.checked_sub(1.minute()).ok()?;
            } else {
                let fired = tz.to_ambiguous_timestamp(t).compatible().ok()?;
                if fired <= at {
                    return Some(fired);
                }
                t = t.checked_sub(1.minute()).ok()?;
            }
        }
        None
    }
}

fn bit(set: u64, n: u32) -> bool {
    n < 64 && set & (1 << n) != 0
}

fn truncate_to_minute(t: DateTime) -> DateTime {
    t.date().at(t.hour(), t.minute(), 0, 0)
}

/// 23:59 of the day before `d`.
fn last_minute_before(d: Date) -> Option<DateTime> {
    Some(d.yesterday().ok()?.at(23, 59, 0, 0))
}

/// Parses one comma-separated field into a bit set; the flag says whether
/// it was a bare `*` or `?` (which changes how the two day fields combine).
fn parse_field(text: &str, spec: &FieldSpec) -> Result<(u64, bool), CronError> {
    let err = |why: String| CronError::Field {
        field: spec.name,
        value: text.to_string(),
        why,
    };
    let mut set = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| err(format!("step {s:?} is not a number")))?;
                if step == 0 {
                    return Err(err("step must be at least 1".into()));
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            // `*/2` restricts the field, a bare `*` does not.
            star = step.is_none_or(|s| s == 1);
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, spec).map_err(&err)?, value(b, spec).map_err(&err)?)
        } else {
            let v = value(range, spec).map_err(&err)?;
            // `5/10` means from 5 to the end of the range in steps of 10.
            (v, if step.is_some() { spec.max } else { v })
        };
        if lo > hi {
            return Err(err(format!("beginning of range ({lo}) beyond end ({hi})")));
        }
        let step = step.unwrap_or(1) as usize;
        for v in (lo..=hi).step_by(step) {
            set |= 1 << v;
        }
    }
    Ok((set, star))
}

fn value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    let v = match spec.names.iter().position(|n| *n == lower) {
        Some(i) => i as u32 + if spec.min == 1 { 1 } else { 0 },
        None => text
            .parse::<u32>()
            .map_err(|_| format!("{text:?} is not a number or name"))?,
    };
    if v < spec.min || v > spec.max {
        return Err(format!("{v} out of range [{}, {}]", spec.min, spec.max));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn next_times_follow_the_schedule() {
        let utc = TimeZone::UTC;
        let cases = [
            ("* * * * *", "2026-01-01T10:00:30Z", "2026-01-01T10:01:00Z"),
            ("* * * * *", "2026-01-01T10:00:00Z", "2026-01-01T10:01:00Z"),
            (
                "*/15 * * * *",
                "2026-01-01T10:01:00Z",
                "2026-01-01T10:15:00Z",
            ),
            (
                "5/20 * * * *",
                "2026-01-01T10:26:00Z",
                "2026-01-01T10:45:00Z",
            ),
            (
                "0 9-17/4 * * *",
                "2026-01-01T13:00:00Z",
                "2026-01-01T17:00:00Z",
            ),
            ("@hourly", "2026-01-01T10:59:59Z", "2026-01-01T11:00:00Z"),
            ("@daily", "2026-01-01T10:00:00Z", "2026-01-02T00:00:00Z"),
            ("@weekly", "2026-01-01T10:00:00Z", "2026-01-04T00:00:00Z"),
            ("@monthly", "2026-01-31T10:00:00Z", "2026-02-01T00:00:00Z"),
            ("@yearly", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            (
                "30 2 * FEB mon",
                "2026-01-01T00:00:00Z",
                "2026-02-02T02:30:00Z",
            ),
            ("0 0 29 2 *", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            // Both day fields restricted: either one matching is enough
            // (the 13th, or any Friday).
            ("0 0 13 * 5", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"),
            // A step of `*` restricts the field too: either may match
            // (Wednesday the 7th, before the 11th).
            (
                "0 0 */10 * 3",
                "2026-01-01T00:00:00Z",
                "2026-01-07T00:00:00Z",
            ),
            // A bare `*` day of month: only the weekday decides.
            ("0 0 * * 3", "2026-01-01T00:00:00Z", "2026-01-07T00:00:00Z"),
            (
                "0 0 * * 0,6",
                "2026-01-01T00:00:00Z",
                "2026-01-03T00:00:00Z",
            ),
        ];
        for (schedule, after, want) in cases {
            let s = Schedule::parse(schedule).unwrap();
            assert_eq!(
                s.next_after(ts(after), &utc),
                Some(ts(want)),
                "{schedule} after {after}"
            );
        }
    }

    #[test]
    fn last_times_are_at_or_before() {
        let utc = TimeZone::UTC;
        let cases = [
            ("* * * * *", "2026-01-01T10:00:30Z", "2026-01-01T10:00:00Z"),
            (
                "*/15 * * * *",
                "2026-01-01T10:14:59Z",
                "2026-01-01T10:00:00Z",
            ),
            (
                "*/15 * * * *",
                "2026-01-01T10:15:00Z",
                "2026-01-01T10:15:00Z",
            ),
            ("@daily", "2026-03-01T10:00:00Z", "2026-03-01T00:00:00Z"),
            ("@monthly", "2026-03-01T00:00:00Z", "2026-03-01T00:00:00Z"),
            (
                "0 12 31 * *",
                "2026-03-01T00:00:00Z",
                "2026-01-31T12:00:00Z",
            ),
            ("@yearly", "2026-06-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        ];
        for (schedule, at, want) in cases {
            let s = Schedule::parse(schedule).unwrap();
            assert_eq!(
                s.last_at_or_before(ts(at), &utc),
                Some(ts(want)),
                "{schedule} at {at}"
            );
        }
    }

    #[test]
    fn a_time_zone_moves_the_firing_instant() {
        let s = Schedule::parse("0 9 * * *").unwrap();
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
        assert_eq!(
            s.next_after(ts("2026-01-10T00:00:00Z"), &berlin),
            Some(ts("2026-01-10T08:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-07-10T00:00:00Z"), &berlin),
            Some(ts("2026-07-10T07:00:00Z"))
        );
    }

    #[test]
    fn a_schedule_that_never_fires_has_no_next_time() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }

    #[test]
    fn malformed_schedules_are_refused() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
            "@every 5m",
            "TZ=UTC * * * * *",
            "CRON_TZ=UTC * * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
