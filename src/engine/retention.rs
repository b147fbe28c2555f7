//! Calendar retention for `vault forget`: which snapshots of one source a set of rules keeps.
//!
//! The rules combine as restic's `forget` combines them: a snapshot kept by any rule is kept.
//! Going from the newest snapshot to the oldest, `--keep-last N` keeps the first N;
//! `--keep-daily N` keeps the newest snapshot of each of the N newest days that have one (and
//! `weekly` of ISO weeks, `monthly` of months, `yearly` of years), days and weeks counted in
//! the snapshot's local time; `--keep-within DUR` keeps every snapshot at most DUR older than
//! the newest one.

use std::time::Duration;

/// The rules (`None`: the rule is not used).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepRules {
    pub last: Option<u64>,
    pub daily: Option<u64>,
    pub weekly: Option<u64>,
    pub monthly: Option<u64>,
    pub yearly: Option<u64>,
    pub within: Option<Duration>,
}

impl KeepRules {
    pub fn is_empty(&self) -> bool {
        *self == KeepRules::default()
    }
}

/// Why a snapshot is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Last,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Within,
}

/// The bucket of a time for one calendar rule.
fn bucket(reason: Reason, time_ns: i64) -> i64 {
    let c = crate::time::local(time_ns);
    match reason {
        Reason::Daily => c.year * 10_000 + i64::from(c.month) * 100 + i64::from(c.day),
        Reason::Weekly => {
            let (y, w) = iso_week(c.year, c.month, c.day, c.weekday);
            y * 100 + i64::from(w)
        }
        Reason::Monthly => c.year * 100 + i64::from(c.month),
        Reason::Yearly => c.year,
        Reason::Last | Reason::Within => 0,
    }
}

/// The ISO 8601 week (year, week) of a date; `weekday` 0 = Monday.
fn iso_week(year: i64, month: u32, day: u32, weekday: u32) -> (i64, u32) {
    let ordinal = day_of_year(year, month, day) as i64;
    let week = (ordinal - i64::from(weekday) + 9) / 7;
    if week < 1 {
        let prev = year - 1;
        let days_prev = if is_leap(prev) { 366 } else { 365 };
        // The same weekday arithmetic on the previous year's last days.
        let w = (ordinal + days_prev - i64::from(weekday) + 9) / 7;
        return (prev, w as u32);
    }
    let days = if is_leap(year) { 366 } else { 365 };
    // Week 53 only if this year's 31 December falls on a Thursday or later in its week.
    if week == 53 && (days - ordinal) < 3 - i64::from(weekday).min(3) {
        return (year + 1, 1);
    }
    (year, week as u32)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn day_of_year(year: i64, month: u32, day: u32) -> u32 {
    const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = u32::from(month > 2 && is_leap(year));
    CUM[(month - 1) as usize] + day + leap
}

/// For snapshots of one source (times in ns, any order), the reasons each is kept for (an
/// empty list: no rule keeps it).
pub fn apply(rules: &KeepRules, times: &[i64]) -> Vec<Vec<Reason>> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(times[i]));
    let mut out = vec![Vec::new(); times.len()];
    let newest = order.first().map(|&i| times[i]);
    let calendar = [
        (Reason::Last, rules.last),
        (Reason::Daily, rules.daily),
        (Reason::Weekly, rules.weekly),
        (Reason::Monthly, rules.monthly),
        (Reason::Yearly, rules.yearly),
    ];
    for (reason, count) in calendar {
        let Some(mut left) = count else { continue };
        let mut last_bucket = None;
        for &i in &order {
            if left == 0 {
                break;
            }
            let b = if reason == Reason::Last {
                i as i64
            } else {
                bucket(reason, times[i])
            };
            if last_bucket != Some(b) {
                out[i].push(reason);
                left -= 1;
                last_bucket = Some(b);
            }
        }
    }
    if let (Some(within), Some(newest)) = (rules.within, newest) {
        let span = i64::try_from(within.as_nanos()).unwrap_or(i64::MAX);
        for &i in &order {
            if newest.saturating_sub(times[i]) <= span {
                out[i].push(Reason::Within);
            }
        }
    }
    for r in &mut out {
        r.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_weeks_at_year_ends() {
        // 2021-01-03 was a Sunday in week 53 of 2020; 2024-12-30 a Monday in week 1 of 2025.
        assert_eq!(iso_week(2021, 1, 3, 6), (2020, 53));
        assert_eq!(iso_week(2021, 1, 4, 0), (2021, 1));
        assert_eq!(iso_week(2024, 12, 30, 0), (2025, 1));
        assert_eq!(iso_week(2026, 12, 31, 3), (2026, 53));
        assert_eq!(iso_week(2027, 1, 1, 4), (2026, 53));
        assert_eq!(iso_week(2026, 6, 15, 0), (2026, 25));
    }

    #[test]
    fn rules_combine_and_count_buckets_from_the_newest() {
        let day = 86_400_000_000_000i64;
        let base = 1_780_000_000 * 1_000_000_000i64;
        // Two snapshots a day for 10 days.
        let times: Vec<i64> = (0..20)
            .map(|i| base + (i / 2) * day + (i % 2) * 3_600_000_000_000)
            .collect();
        let rules = KeepRules {
            last: Some(3),
            daily: Some(4),
            ..KeepRules::default()
        };
        let kept = apply(&rules, &times);
        let n = kept.iter().filter(|r| !r.is_empty()).count();
        // The 3 newest, and the newest of 4 days: 2 of those are among the 3 newest.
        assert_eq!(n, 5, "{kept:?}");
        assert_eq!(kept[19], vec![Reason::Last, Reason::Daily]);
        assert_eq!(kept[15], vec![Reason::Daily]);
        let within = KeepRules {
            within: Some(Duration::from_secs(86_400)),
            ..KeepRules::default()
        };
        assert_eq!(
            apply(&within, &times)
                .iter()
                .filter(|r| !r.is_empty())
                .count(),
            3
        );
    }
}
