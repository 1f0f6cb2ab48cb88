//! Job configuration: the `--set key=value` pairs a run is given, read by the job by key.
//!
//! A job reads its settings with [`JobConfig::get`] (with a default) while it builds; every key it
//! reads becomes a *known* key. A run that was given a key the job never read fails with
//! [`Error::UnknownConfigKey`], so a typo in `--set` is an error, not a silent default.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// The settings of one run of a job.
#[derive(Debug, Default)]
pub struct JobConfig {
    values: BTreeMap<String, String>,
    known: Mutex<BTreeSet<String>>,
}

impl Clone for JobConfig {
    fn clone(&self) -> Self {
        JobConfig {
            values: self.values.clone(),
            known: Mutex::new(self.known.lock().map(|k| k.clone()).unwrap_or_default()),
        }
    }
}

impl JobConfig {
    /// An empty configuration: every setting takes its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// A configuration from `key=value` strings, as given to `--set`.
    pub fn from_pairs<I, S>(pairs: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut cfg = JobConfig::new();
        for pair in pairs {
            let pair = pair.as_ref();
            let (k, v) = pair.split_once('=').ok_or_else(|| Error::BadConfigValue {
                key: pair.to_string(),
                value: String::new(),
                expected: "key=value".to_string(),
            })?;
            if k.trim().is_empty() {
                return Err(Error::BadConfigValue {
                    key: pair.to_string(),
                    value: v.to_string(),
                    expected: "a non-empty key before '='".to_string(),
                });
            }
            cfg.values.insert(k.trim().to_string(), v.to_string());
        }
        Ok(cfg)
    }

    /// Sets `key` to `value` (builder style, for tests and embedding).
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.values.insert(key.to_string(), value.to_string());
        self
    }

    /// The value of `key` parsed as `T`, or `default` when the run did not set it.
    pub fn get<T: FromStr>(&self, key: &str, default: T) -> Result<T> {
        self.mark(key);
        match self.values.get(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| Error::BadConfigValue {
                key: key.to_string(),
                value: v.clone(),
                expected: type_words::<T>(),
            }),
        }
    }

    /// The value of `key` as a string, if the run set it.
    pub fn get_opt(&self, key: &str) -> Option<String> {
        self.mark(key);
        self.values.get(key).cloned()
    }

    /// Whether the run set `key` (marks it known).
    pub fn contains(&self, key: &str) -> bool {
        self.mark(key);
        self.values.contains_key(key)
    }

    fn mark(&self, key: &str) {
        if let Ok(mut known) = self.known.lock() {
            known.insert(key.to_string());
        }
    }

    /// Fails with [`Error::UnknownConfigKey`] if the run set a key that the job never read.
    pub fn check_unknown(&self, job: &str) -> Result<()> {
        let known = self.known.lock().map(|k| k.clone()).unwrap_or_default();
        for key in self.values.keys() {
            if !known.contains(key) {
                let list: Vec<&str> = known.iter().map(String::as_str).collect();
                return Err(Error::UnknownConfigKey {
                    job: job.to_string(),
                    key: key.clone(),
                    known: if list.is_empty() {
                        "none".to_string()
                    } else {
                        list.join(", ")
                    },
                });
            }
        }
        Ok(())
    }
}

fn type_words<T>() -> String {
    let name = std::any::type_name::<T>();
    match name {
        "u8" | "u16" | "u32" | "u64" | "usize" => "an unsigned integer".to_string(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "bool" => "true or false".to_string(),
        _ => name.rsplit("::").next().unwrap_or(name).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_reported_and_bad_values_named() {
        let cfg = JobConfig::from_pairs(["events=10", "evnets=3"]).unwrap();
        assert_eq!(cfg.get("events", 1u64).unwrap(), 10);
        let err = cfg.check_unknown("w2").unwrap_err().to_string();
        assert!(err.contains("'evnets'") && err.contains("events"), "{err}");

        let cfg = JobConfig::from_pairs(["events=ten"]).unwrap();
        let err = cfg.get("events", 1u64).unwrap_err().to_string();
        assert!(
            err.contains("events") && err.contains("'ten'") && err.contains("unsigned"),
            "{err}"
        );
        assert!(JobConfig::from_pairs(["novalue"]).is_err());
    }
}
