//! What a scenario reports: figures, must-be-zero counters and goals, rendered as plain text.

use std::fmt::Write;
use std::time::Duration;

use super::util::fmt_duration;
use super::Scenario;

/// One scenario's results.
#[derive(Clone, Debug)]
pub struct Section {
    /// The scenario.
    pub scenario: Scenario,
    /// What was set up and done, in words.
    pub setup: Vec<String>,
    /// Measured figures, one per line.
    pub figures: Vec<String>,
    /// Counters that must be 0, with their values.
    pub checks: Vec<(String, u64)>,
    /// Goals (not counters) and whether this run met them.
    pub goals: Vec<(String, bool)>,
    /// Details worth reading when a counter is not 0 (first occurrences).
    pub details: Vec<String>,
    /// Set when the scenario could not run to its end (a panic, a timeout, a missing binary).
    pub aborted: Option<String>,
    /// Wall time of the scenario.
    pub took: Duration,
}

impl Section {
    pub(crate) fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            setup: Vec::new(),
            figures: Vec::new(),
            checks: Vec::new(),
            goals: Vec::new(),
            details: Vec::new(),
            aborted: None,
            took: Duration::ZERO,
        }
    }

    pub(crate) fn setup(&mut self, line: impl Into<String>) {
        self.setup.push(line.into());
    }

    pub(crate) fn figure(&mut self, line: impl Into<String>) {
        self.figures.push(line.into());
    }

    /// A counter that must be 0.
    pub(crate) fn zero(&mut self, name: impl Into<String>, count: u64) {
        self.checks.push((name.into(), count));
    }

    pub(crate) fn goal(&mut self, name: impl Into<String>, met: bool) {
        self.goals.push((name.into(), met));
    }

    /// Keeps at most 20 details, so a broken run stays readable.
    pub(crate) fn detail(&mut self, line: impl Into<String>) {
        if self.details.len() < 20 {
            self.details.push(line.into());
        }
    }

    /// The must-be-zero counters that are not 0, and the abort reason if any.
    pub fn failures(&self) -> Vec<String> {
        let mut failures: Vec<String> = self
            .checks
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(name, count)| format!("{}: {name} = {count}", self.scenario.id()))
            .collect();
        if let Some(reason) = &self.aborted {
            failures.push(format!("{}: aborted: {reason}", self.scenario.id()));
        }
        failures
    }

    /// The goals this run missed.
    pub fn missed_goals(&self) -> Vec<String> {
        self.goals
            .iter()
            .filter(|(_, met)| !met)
            .map(|(name, _)| format!("{}: {name}", self.scenario.id()))
            .collect()
    }

    /// The section as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "== {} ({}) ==",
            self.scenario.title(),
            self.scenario.id()
        );
        for line in &self.setup {
            let _ = writeln!(out, "  setup: {line}");
        }
        for line in &self.figures {
            let _ = writeln!(out, "  {line}");
        }
        for (name, count) in &self.checks {
            let verdict = if *count == 0 { "ok" } else { "FAILED" };
            let _ = writeln!(out, "  must be 0: {name} = {count}  [{verdict}]");
        }
        for (name, met) in &self.goals {
            let verdict = if *met { "met" } else { "MISSED" };
            let _ = writeln!(out, "  goal: {name}  [{verdict}]");
        }
        for line in &self.details {
            let _ = writeln!(out, "  detail: {line}");
        }
        if let Some(reason) = &self.aborted {
            let _ = writeln!(out, "  ABORTED: {reason}");
        }
        let _ = writeln!(out, "  took {}", fmt_duration(self.took));
        out
    }
}

/// Every section of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The sections, in the order the scenarios ran.
    pub sections: Vec<Section>,
    /// Wall time of the whole run.
    pub took: Duration,
}

impl Report {
    /// Every must-be-zero counter that is not 0, and every aborted scenario.
    pub fn failures(&self) -> Vec<String> {
        self.sections.iter().flat_map(Section::failures).collect()
    }

    /// Every goal this run missed.
    pub fn missed_goals(&self) -> Vec<String> {
        self.sections
            .iter()
            .flat_map(Section::missed_goals)
            .collect()
    }

    /// The closing summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let checks: usize = self.sections.iter().map(|s| s.checks.len()).sum();
        let _ = writeln!(
            out,
            "== summary ==\n  scenarios: {}; must-be-zero counters: {checks}; took {}",
            self.sections.len(),
            fmt_duration(self.took)
        );
        let failures = self.failures();
        if failures.is_empty() {
            let _ = writeln!(out, "  every must-be-zero counter is 0");
        } else {
            for failure in &failures {
                let _ = writeln!(out, "  FAILED {failure}");
            }
        }
        for goal in self.missed_goals() {
            let _ = writeln!(out, "  goal missed: {goal}");
        }
        out
    }

    /// Every section, then the summary.
    pub fn render(&self) -> String {
        let mut out: String = self.sections.iter().map(|s| s.render() + "\n").collect();
        out.push_str(&self.summary());
        out
    }
}
