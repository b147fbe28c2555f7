//! When a daemon job runs: `every` DUR after its last start, or at the times of a calendar
//! spec (`at`). Calendar specs are cron patterns, parsed and stepped by the croner crate
//! (`"30 1 * * *"`, `"0 */6 * * mon-fri"`, `@daily`), or the short form systemd and Proxmox
//! users write (`"mon..fri 01:30"`, `"01:30"`), which is turned into the same cron pattern.
//! Times are the machine's local time.

use std::time::Duration;

use chrono::TimeZone;

/// A calendar spec, kept with the text the user wrote.
#[derive(Clone, Debug)]
pub struct Calendar {
    text: String,
    cron: croner::Cron,
}

impl Calendar {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Calendar, String> {
        let pattern = cron_pattern(text);
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(&pattern)
            .map_err(|e| {
                format!("bad calendar spec '{text}': {e} (write e.g. \"mon..fri 01:30\" or a cron pattern \"30 1 * * *\")")
            })?;
        Ok(Calendar {
            text: text.to_string(),
            cron,
        })
    }

    /// The first time after `unix_s` (whole seconds) the spec names, if any.
    pub fn next_after(&self, unix_s: i64) -> Option<i64> {
        let now = chrono::Local.timestamp_opt(unix_s, 0).single()?;
        self.cron
            .find_next_occurrence(&now, false)
            .ok()
            .map(|t| t.timestamp())
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl std::str::FromStr for Calendar {
    type Err = String;
    fn from_str(s: &str) -> Result<Calendar, String> {
        Calendar::parse(s)
    }
}

/// The short form `[DAYS] HH:MM[:SS]` as a cron pattern (`mon..fri 01:30` → `0 30 1 * * mon-fri`);
/// anything else is taken as a cron pattern already.
fn cron_pattern(text: &str) -> String {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let (days, time) = match parts.as_slice() {
        [t] => ("*".to_string(), *t),
        [d, t]
            if d.chars()
                .all(|c| c.is_ascii_alphabetic() || c == ',' || c == '.') =>
        {
            (d.replace("..", "-"), *t)
        }
        _ => return text.to_string(),
    };
    let hms: Vec<&str> = time.split(':').collect();
    let digits = |s: &&str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !(2..=3).contains(&hms.len()) || !hms.iter().all(digits) {
        return text.to_string();
    }
    let sec = hms.get(2).copied().unwrap_or("0");
    format!("{sec} {} {} * * {days}", hms[1], hms[0])
}

/// A job's schedule.
#[derive(Clone, Debug)]
pub enum When {
    /// `every = "6h"`: at start-up, then DUR after each start.
    Every(Duration),
    /// `at = "mon..sun 01:30"`.
    At(Box<Calendar>),
    /// No schedule: the job runs only when triggered (a fleet host that comes up).
    Triggered,
    /// `watch = true`: after changes in the source settle for `debounce` (and a full rescan
    /// every `rescan`), as `vault watch` does.
    Watch {
        debounce: Duration,
        rescan: Duration,
    },
}

impl When {
    /// When the job runs next, in unix milliseconds: `last_start` is its last start (None at
    /// start-up), `now` the time now.
    pub fn next(&self, last_start: Option<i64>, now: i64) -> Option<i64> {
        match self {
            When::Every(d) => Some(last_start.map_or(now, |s| {
                s.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            })),
            When::At(c) => c
                .next_after(last_start.unwrap_or(now).max(now) / 1000)
                .map(|s| s.saturating_mul(1000)),
            When::Triggered | When::Watch { .. } => None,
        }
    }

    /// How the schedule reads in a listing (`every 6h`, `at mon..fri 01:30`, `on host up`).
    pub fn describe(&self) -> String {
        match self {
            When::Every(d) => format!("every {}", crate::time::human_duration(*d)),
            When::At(c) => format!("at {}", c.text()),
            When::Triggered => "when a host comes up".to_string(),
            When::Watch { debounce, .. } => format!(
                "on changes (settled {})",
                crate::time::human_duration(*debounce)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms_become_cron_patterns() {
        assert_eq!(cron_pattern("mon..fri 01:30"), "0 30 01 * * mon-fri");
        assert_eq!(cron_pattern("01:30"), "0 30 01 * * *");
        assert_eq!(cron_pattern("sat,sun 23:05:10"), "10 05 23 * * sat,sun");
        assert_eq!(cron_pattern("30 1 * * *"), "30 1 * * *");
        assert!(Calendar::parse("mon..sun 01:30").is_ok());
        assert!(Calendar::parse("30 1 * * *").is_ok());
        let e = Calendar::parse("someday 25:99").unwrap_err();
        assert!(e.contains("bad calendar spec 'someday 25:99'"), "{e}");
    }

    #[test]
    fn the_next_time_is_after_now_and_on_the_spec() {
        let c = Calendar::parse("*/5 * * * * *").unwrap();
        let t = c.next_after(1_000_000_002).unwrap();
        assert_eq!(t, 1_000_000_005);
        let daily = Calendar::parse("00:00").unwrap();
        let n = daily.next_after(1_000_000_000).unwrap();
        assert!(
            n > 1_000_000_000 && n - 1_000_000_000 <= 86_400 + 3600,
            "{n}"
        );
        let w = When::Every(Duration::from_secs(2));
        assert_eq!(w.next(None, 5000), Some(5000));
        assert_eq!(w.next(Some(5000), 6000), Some(7000));
        assert_eq!(When::Triggered.next(None, 1), None);
    }
}
