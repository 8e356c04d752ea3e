//! Results: a table for people, JSON for machines, and a diff against the results a
//! broker is expected to give (`conformance/expected/*.json`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cases::Case;
use crate::{Level, Outcome, Target};

/// One case's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub level: Level,
    pub title: String,
    /// `pass`, `fail` or `choice`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub choice: Option<String>,
    pub detail: String,
    pub ms: u64,
}

impl Row {
    pub fn new(case: &Case, outcome: Outcome, took: Duration) -> Row {
        let (result, choice, detail) = match outcome {
            Outcome::Pass(d) => ("pass", None, d),
            Outcome::Fail(d) => ("fail", None, d),
            Outcome::Choice { choice, detail } => ("choice", Some(choice), detail),
        };
        Row {
            id: case.id.to_string(),
            level: case.level,
            title: case.title.to_string(),
            result: result.to_string(),
            choice,
            detail,
            ms: took.as_millis() as u64,
        }
    }

    /// The stable part of the result, as an expected-results file holds it.
    pub fn key(&self) -> String {
        match &self.choice {
            Some(c) => format!("choice: {c}"),
            None => self.result.clone(),
        }
    }
}

/// Counts per result.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub pass: usize,
    pub must_failed: usize,
    pub should_failed: usize,
    pub choice_failed: usize,
    pub choices: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub suite: String,
    pub url: String,
    pub transport: String,
    pub seconds: f64,
    pub summary: Summary,
    pub cases: Vec<Row>,
}

impl Report {
    pub fn new(target: &Target, cases: Vec<Row>, took: Duration) -> Report {
        let mut summary = Summary::default();
        for r in &cases {
            match (r.result.as_str(), r.level) {
                ("pass", _) => summary.pass += 1,
                ("choice", _) => summary.choices += 1,
                (_, Level::Must) => summary.must_failed += 1,
                (_, Level::Should) => summary.should_failed += 1,
                (_, Level::Choice) => summary.choice_failed += 1,
            }
        }
        let url = match target {
            Target::Tcp(a) => format!("tcp://{a}"),
            Target::Ws(u) => u.clone(),
        };
        Report {
            suite: format!("stompbox-conformance {}", env!("CARGO_PKG_VERSION")),
            url,
            transport: target.transport().to_string(),
            seconds: (took.as_secs_f64() * 10.0).round() / 10.0,
            summary,
            cases,
        }
    }

    /// Whether every MUST passed (the exit status).
    pub fn must_passed(&self) -> bool {
        self.summary.must_failed == 0
    }

    pub fn table(&self) -> String {
        let mut out = format!("stompbox-conformance against {}\n\n", self.url);
        out.push_str(&format!(
            "{:<12} {:<6} {:<22} {}\n",
            "id", "level", "result", "detail"
        ));
        for r in &self.cases {
            let result = match (&r.choice, r.result.as_str(), r.level) {
                (Some(c), _, _) => format!("chose: {c}"),
                (None, "fail", Level::Should) => "FAIL (should)".to_string(),
                (None, "fail", _) => "FAIL".to_string(),
                (None, other, _) => other.to_string(),
            };
            let detail = if r.choice.is_some() && !r.detail.is_empty() {
                r.detail.clone()
            } else if r.choice.is_some() {
                String::new()
            } else {
                r.detail.clone()
            };
            out.push_str(&format!(
                "{:<12} {:<6} {:<22} {} — {}\n",
                r.id,
                r.level.as_str(),
                result,
                r.title,
                detail
            ));
        }
        let s = &self.summary;
        out.push_str(&format!(
            "\n{} passed, {} MUST failed, {} SHOULD failed, {} choices reported{} ({:.1} s)\n",
            s.pass,
            s.must_failed,
            s.should_failed,
            s.choices,
            if s.choice_failed > 0 {
                format!(", {} choice cases broken", s.choice_failed)
            } else {
                String::new()
            },
            self.seconds
        ));
        out
    }

    /// id → stable result, for an expected-results file.
    pub fn keys(&self) -> BTreeMap<String, String> {
        self.cases.iter().map(|r| (r.id.clone(), r.key())).collect()
    }

    /// Differences from `expected` (id → stable result), one line each.
    pub fn diff(&self, expected: &BTreeMap<String, String>) -> Vec<String> {
        let got = self.keys();
        let mut out = Vec::new();
        for (id, want) in expected {
            match got.get(id) {
                None => out.push(format!("{id}: expected {want:?}, case did not run")),
                Some(have) if have != want => {
                    let detail = self
                        .cases
                        .iter()
                        .find(|r| &r.id == id)
                        .map(|r| r.detail.as_str())
                        .unwrap_or("");
                    out.push(format!("{id}: expected {want:?}, got {have:?} ({detail})"))
                }
                Some(_) => {}
            }
        }
        for id in got.keys().filter(|id| !expected.contains_key(*id)) {
            out.push(format!(
                "{id}: not in the expected results (got {:?})",
                got[id]
            ));
        }
        out
    }
}

/// An expected-results file: transport (`tcp`, `ws`) → id → stable result.
pub type Expected = BTreeMap<String, BTreeMap<String, String>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, level: Level, result: &str, choice: Option<&str>) -> Row {
        Row {
            id: id.into(),
            level,
            title: String::new(),
            result: result.into(),
            choice: choice.map(Into::into),
            detail: "why".into(),
            ms: 0,
        }
    }

    fn report() -> Report {
        Report::new(
            &Target::Tcp("127.0.0.1:1".into()),
            vec![
                row("F1", Level::Must, "pass", None),
                row("F8", Level::Should, "fail", None),
                row("C5", Level::Choice, "choice", Some("accepted")),
            ],
            Duration::ZERO,
        )
    }

    #[test]
    fn summary_counts_failures_by_level() {
        let r = report();
        assert_eq!(
            (
                r.summary.pass,
                r.summary.must_failed,
                r.summary.should_failed
            ),
            (1, 0, 1)
        );
        assert_eq!(r.summary.choices, 1);
        assert!(r.must_passed());
    }

    #[test]
    fn diff_names_changed_missing_and_unexpected_cases() {
        let r = report();
        let expected: BTreeMap<String, String> = [
            ("F1", "pass"),
            ("F8", "pass"),
            ("C5", "choice: rejected"),
            ("W1", "pass"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let diff = r.diff(&expected);
        assert_eq!(diff.len(), 3, "{diff:?}");
        assert!(diff[0].starts_with("C5: expected \"choice: rejected\", got \"choice: accepted\""));
        assert!(diff[1].starts_with("F8: expected \"pass\", got \"fail\" (why)"));
        assert!(diff[2].starts_with("W1: expected \"pass\", case did not run"));
        assert!(r.diff(&r.keys()).is_empty());
    }
}
