//! The config file's structure and parser (`vault.toml`, or `--config FILE`): defaults for flags,
//! named backup jobs, alert recipients and SMTP settings, scan targets and ssh host lists.
//!
//! Every key is checked: an unknown key or a wrong type is an error naming the file, the line and
//! the key, on one line (exit 2). Applying the values to the command line is the binary's job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::archive::Compression;
use crate::engine::backup::FullDay;
use crate::hash::HashAlgo;
use crate::ops::daemon::Calendar;
use crate::ops::sweep::PortList;
use crate::Error;

/// A value written as text and parsed like its flag (`full_on = "sun"`, `tcp = "22,80"`), so a
/// bad one is an error naming the line and the key.
fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    Option::<String>::deserialize(d)?
        .map(|s| s.parse::<T>())
        .transpose()
        .map_err(serde::de::Error::custom)
}

/// A duration written as text (`timeout = "2s"`).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| crate::time::parse_duration(&s))
        .transpose()
        .map_err(serde::de::Error::custom)
}

/// Values shared by `[backup]` and `[job.NAME]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    pub source: Option<PathBuf>,
    pub repo: Option<PathBuf>,
    pub exclude: Option<Vec<String>>,
    /// Pattern files, as `--exclude-file` (relative paths are relative to the config file's
    /// working directory, as on the command line).
    pub exclude_file: Option<Vec<PathBuf>>,
    pub exclude_caches: Option<bool>,
    pub exclude_if_present: Option<Vec<String>>,
    pub one_file_system: Option<bool>,
    #[serde(default, deserialize_with = "parsed")]
    pub full_on: Option<FullDay>,
    pub max_chain: Option<u64>,
    #[serde(default, deserialize_with = "parsed")]
    pub compression: Option<Compression>,
    pub level: Option<i32>,
    #[serde(default, deserialize_with = "parsed")]
    pub hash: Option<HashAlgo>,
    pub rehash: Option<bool>,
    pub alert_to: Option<Vec<String>>,
    /// `vault daemon` runs the job this often (`[job.NAME]` only).
    #[serde(default, deserialize_with = "duration")]
    pub every: Option<Duration>,
    /// `vault daemon` only: calendar times (`"mon..fri 01:30"`, or a cron pattern).
    #[serde(default, deserialize_with = "parsed")]
    pub at: Option<Calendar>,
    /// `vault daemon` only: alert when the job has had no success for this long.
    #[serde(default, deserialize_with = "duration")]
    pub max_age: Option<Duration>,
    /// `vault daemon` only: push the repository here after each run that recorded something.
    pub push_to: Option<String>,
    /// Calendar retention (`keep = { daily = 7, weekly = 4 }`), applied to the job's source
    /// after each backup when `forget_after = true`.
    pub keep: Option<KeepSettings>,
    pub forget_after: Option<bool>,
    /// `vault daemon` only: back up after changes settle, as `vault watch` does.
    pub watch: Option<bool>,
    /// With `watch`: how long changes must settle (`vault watch --debounce`).
    #[serde(default, deserialize_with = "duration")]
    pub debounce: Option<Duration>,
    /// With `watch`: a full rescan at least this often (`vault watch --rescan-interval`).
    #[serde(default, deserialize_with = "duration")]
    pub rescan_interval: Option<Duration>,
}

/// `[alert]`: recipients and SMTP settings for `--alert-to` and `vault mail`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    pub to: Option<Vec<String>>,
    pub smtp: Option<String>,
    pub starttls: Option<bool>,
    pub tls: Option<bool>,
    pub smtp_user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub smtp_ca: Option<PathBuf>,
    pub from: Option<String>,
}

/// `[scan]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSettings {
    pub targets: Option<Vec<String>>,
    pub hosts_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "parsed")]
    pub tcp: Option<PortList>,
    pub icmp: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub rate: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    pub every: Option<Duration>,
    pub state: Option<PathBuf>,
    pub alert_to: Option<Vec<String>>,
}

/// `[ssh]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    pub hosts: Option<Vec<String>>,
    pub hosts_file: Option<PathBuf>,
    pub identity: Option<Vec<PathBuf>>,
    pub known_hosts: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    pub parallel: Option<std::num::NonZeroU16>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub passphrase_env: Option<String>,
}

/// `[fleet]`: the hosts and folders `vault backup --fleet` pulls over SSH.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    /// `[user@]host[:port]` targets.
    pub hosts: Option<Vec<String>>,
    pub hosts_file: Option<PathBuf>,
    /// Blocks to sweep for answering SSH ports (`[user@]CIDR[:port]`).
    pub sweep: Option<Vec<String>>,
    /// Absolute folders to back up on every host.
    pub paths: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub parallel: Option<std::num::NonZeroU16>,
    pub up_from_scan: Option<bool>,
    pub identity: Option<Vec<PathBuf>>,
    pub known_hosts: Option<PathBuf>,
    pub repo: Option<PathBuf>,
    pub alert_to: Option<Vec<String>>,
    /// `vault daemon`: run the fleet every DUR, or at calendar times.
    #[serde(default, deserialize_with = "duration")]
    pub every: Option<Duration>,
    #[serde(default, deserialize_with = "parsed")]
    pub at: Option<Calendar>,
    /// `vault daemon`: back up a host when a sweep sees it come up and its last backup is
    /// older than `max_age`.
    pub on_up: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    pub max_age: Option<Duration>,
}

/// `keep = { … }` of a job: `vault forget`'s calendar rules.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepSettings {
    pub last: Option<u64>,
    pub daily: Option<u64>,
    pub weekly: Option<u64>,
    pub monthly: Option<u64>,
    pub yearly: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    pub within: Option<Duration>,
}

impl KeepSettings {
    pub fn rules(&self) -> crate::engine::retention::KeepRules {
        crate::engine::retention::KeepRules {
            last: self.last,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            yearly: self.yearly,
            within: self.within,
        }
    }
}

/// `[push]`: defaults for `vault push` (and a daemon job's `push_to`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSettings {
    /// `--encrypt-to`: age recipients every push is encrypted to.
    pub encrypt_to: Option<Vec<String>>,
    /// `--recipients-file`.
    pub recipients_file: Option<Vec<PathBuf>>,
}

/// `[sweep.NAME]`: a sweep `vault daemon` runs every `every`; the keys of `[scan]`, whose values
/// are its defaults.
pub type SweepSettings = ScanSettings;

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub repo: Option<PathBuf>,
    pub jobs: Option<std::num::NonZeroU16>,
    #[serde(default)]
    pub backup: BackupSettings,
    #[serde(default)]
    pub job: BTreeMap<String, BackupSettings>,
    #[serde(default)]
    pub alert: AlertSettings,
    #[serde(default)]
    pub scan: ScanSettings,
    #[serde(default)]
    pub ssh: SshSettings,
    #[serde(default)]
    pub fleet: FleetSettings,
    #[serde(default)]
    pub sweep: BTreeMap<String, SweepSettings>,
    #[serde(default)]
    pub push: PushSettings,
}

/// Parses config text; errors name `path`, the line and the key, on one line.
pub fn parse(path: &Path, text: &str) -> Result<Config, Error> {
    toml::from_str::<Config>(text).map_err(|e| {
        let line_no = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let key = line_no
            .and_then(|n| text.lines().nth(n - 1))
            .and_then(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
            .filter(|k| !k.is_empty());
        let msg = e.message().replace('\n', " ");
        Error::Usage(match (line_no, key) {
            (Some(n), Some(k)) => format!("{}:{n}: key `{k}`: {msg}", path.display()),
            (Some(n), None) => format!("{}:{n}: {msg}", path.display()),
            _ => format!("{}: {msg}", path.display()),
        })
    })
}
