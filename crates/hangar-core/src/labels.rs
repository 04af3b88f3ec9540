//! Runner labels: the vocabulary jobs and pools are matched in.
//!
//! GitHub compares labels case-insensitively, so [`Labels`] is a set keyed by
//! the lowercase form that remembers the spelling it was first given.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("empty label (check for a doubled or trailing comma)")]
    Empty,
    #[error("label {label:?} is longer than {max} characters")]
    TooLong { label: String, max: usize },
    #[error(
        "label {label:?} contains {ch:?}; labels may use ASCII letters, digits and - _ . : = / + @"
    )]
    BadChar { label: String, ch: char },
    #[error("{count} labels given; GitHub allows at most {max}")]
    TooMany { count: usize, max: usize },
    #[error("at least one label is required")]
    NoneGiven,
}

/// One runner label, validated.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

impl Label {
    pub const MAX_LEN: usize = 256;

    pub fn parse(s: &str) -> Result<Self, LabelError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(LabelError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(LabelError::TooLong {
                label: s.to_owned(),
                max: Self::MAX_LEN,
            });
        }
        if let Some(ch) = s.chars().find(|c| {
            !(c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | '.' | ':' | '=' | '/' | '+' | '@'))
        }) {
            return Err(LabelError::BadChar {
                label: s.to_owned(),
                ch,
            });
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl TryFrom<String> for Label {
    type Error = LabelError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Label> for String {
    fn from(value: Label) -> Self {
        value.0
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A case-insensitive set of labels, at most [`Labels::MAX`] of them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Labels(BTreeMap<String, Label>);

impl Labels {
    /// GitHub's limit on labels per runner.
    pub const MAX: usize = 100;

    /// Parses a comma-separated list such as `self-hosted,linux,X64`.
    pub fn parse_list(s: &str) -> Result<Self, LabelError> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        Self::from_strs(s.split(','))
    }

    pub fn from_strs<I, S>(items: I) -> Result<Self, LabelError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeMap::new();
        for item in items {
            let label = Label::parse(item.as_ref())?;
            set.entry(label.key()).or_insert(label);
        }
        if set.len() > Self::MAX {
            return Err(LabelError::TooMany {
                count: set.len(),
                max: Self::MAX,
            });
        }
        Ok(Self(set))
    }

    /// Like [`Labels::parse_list`] but refuses an empty list.
    pub fn parse_non_empty(s: &str) -> Result<Self, LabelError> {
        let labels = Self::parse_list(s)?;
        if labels.is_empty() {
            return Err(LabelError::NoneGiven);
        }
        Ok(labels)
    }

    pub fn contains(&self, label: &str) -> bool {
        self.0.contains_key(&label.to_ascii_lowercase())
    }

    /// True when every label of `self` is also in `other` (case-insensitive).
    pub fn is_subset_of(&self, other: &Labels) -> bool {
        self.0.keys().all(|k| other.0.contains_key(k))
    }

    /// Adds a label; returns false when it was already there (in any case).
    pub fn insert(&mut self, label: Label) -> bool {
        use std::collections::btree_map::Entry;
        match self.0.entry(label.key()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(label);
                true
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.values()
    }

    /// The labels as given, sorted case-insensitively.
    pub fn to_vec(&self) -> Vec<String> {
        self.0.values().map(|l| l.0.clone()).collect()
    }
}

impl TryFrom<Vec<String>> for Labels {
    type Error = LabelError;
    fn try_from(value: Vec<String>) -> Result<Self, Self::Error> {
        Self::from_strs(value)
    }
}

impl From<Labels> for Vec<String> {
    fn from(value: Labels) -> Self {
        value.to_vec()
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.values()).finish()
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vec().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comma_lists_case_insensitively() {
        let l = Labels::parse_list("self-hosted, Linux,X64,linux").unwrap();
        assert_eq!(l.len(), 3);
        assert!(l.contains("LINUX"));
        assert!(l.contains("x64"));
        // First spelling wins.
        assert_eq!(l.to_vec(), vec!["Linux", "self-hosted", "X64"]);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Labels::parse_list("a,,b"), Err(LabelError::Empty));
        assert_eq!(Labels::parse_list("a,"), Err(LabelError::Empty));
        assert!(matches!(
            Labels::parse_list("has space"),
            Err(LabelError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            Labels::parse_list("tab\there"),
            Err(LabelError::BadChar { .. })
        ));
        assert!(matches!(
            Labels::parse_list(&"x".repeat(257)),
            Err(LabelError::TooLong { .. })
        ));
        let many: Vec<String> = (0..101).map(|i| format!("l{i}")).collect();
        assert_eq!(
            Labels::from_strs(&many),
            Err(LabelError::TooMany {
                count: 101,
                max: 100
            })
        );
        let hundred: Vec<String> = (0..100).map(|i| format!("l{i}")).collect();
        assert!(Labels::from_strs(&hundred).is_ok());
        assert_eq!(Labels::parse_non_empty(""), Err(LabelError::NoneGiven));
    }

    #[test]
    fn subset_is_case_insensitive() {
        let job = Labels::parse_list("Self-Hosted,AZURE-cvm").unwrap();
        let pool = Labels::parse_list("self-hosted,azure-cvm,ubuntu-2204").unwrap();
        assert!(job.is_subset_of(&pool));
        assert!(!pool.is_subset_of(&job));
        assert!(Labels::default().is_subset_of(&pool));
    }

    #[test]
    fn serde_round_trip_validates() {
        let l: Labels = serde_json::from_str(r#"["a","B"]"#).unwrap();
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"["a","B"]"#);
        assert!(serde_json::from_str::<Labels>(r#"["a b"]"#).is_err());
    }
}
