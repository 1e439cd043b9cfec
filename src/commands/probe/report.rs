//! How a probe's phases are recorded: each finished phase is kept for the JSON report and, in
//! text mode, printed as soon as it ends, so a slow or hanging phase shows where the probe is.
//! A failed phase also yields the [`ProbeFailed`] that ends the probe.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::{Cause, ProbeFailed};

/// One finished phase, as printed and as JSON.
#[derive(Debug, Serialize)]
pub(super) struct Phase {
    pub(super) phase: &'static str,
    pub(super) ok: bool,
    pub(super) ms: u64,
    pub(super) summary: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) notes: Vec<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub(super) data: Value,
}

/// The phases so far; in text mode (`print`) each is printed as soon as it ends.
pub(super) struct Report {
    pub(super) print: bool,
    pub(super) phases: Vec<Phase>,
}

impl Report {
    pub(super) fn push(&mut self, phase: Phase) {
        if self.print {
            let status = if phase.ok { "ok" } else { "FAILED" };
            println!(
                "{:<8} {:<6} {:>5} ms  {}",
                phase.phase, status, phase.ms, phase.summary
            );
            for note in &phase.notes {
                println!("{:24}{note}", "");
            }
        }
        self.phases.push(phase);
    }

    pub(super) fn ok(
        &mut self,
        phase: &'static str,
        started: Instant,
        summary: String,
        notes: Vec<String>,
    ) {
        self.ok_with(phase, started, summary, notes, Value::Null);
    }

    pub(super) fn ok_with(
        &mut self,
        phase: &'static str,
        started: Instant,
        summary: String,
        notes: Vec<String>,
        data: Value,
    ) {
        self.push(Phase {
            phase,
            ok: true,
            ms: ms(started),
            summary,
            notes,
            data,
        });
    }

    /// Record the failure of `phase` and return the error that ends the probe.
    pub(super) fn fail(
        &mut self,
        phase: &'static str,
        started: Instant,
        cause: Cause,
        diagnosis: String,
        notes: Vec<String>,
    ) -> ProbeFailed {
        self.push(Phase {
            phase,
            ok: false,
            ms: ms(started),
            summary: format!("{} (exit {})", cause.name(), cause.exit_code()),
            notes,
            data: Value::Null,
        });
        ProbeFailed {
            phase,
            cause,
            diagnosis,
        }
    }
}

pub(super) fn ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}
