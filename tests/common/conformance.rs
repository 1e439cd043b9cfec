//! The official MCP conformance suite (`tests/fixtures/conformance/run.sh`: server scenarios of
//! every spec version it offers), run against one URL, and two runs compared scenario by scenario.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// (spec version, scenario).
pub type Scenario = (String, String);

/// One run of the suite.
pub struct Run {
    /// Whether each scenario passed.
    pub passed: BTreeMap<Scenario, bool>,
    /// run.sh's whole table (one row per scenario, with the first failure's message).
    pub table: String,
}

impl Run {
    /// Run the suite against `url`; the suite's Node trusts `ca` on top of its own roots.
    /// Panics when run.sh itself cannot run (the scenarios' outcomes are in the result).
    pub fn against(url: &str, ca: Option<&Path>) -> Self {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conformance/run.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(script).arg(url);
        if let Some(ca) = ca {
            cmd.env("NODE_EXTRA_CA_CERTS", ca);
        }
        let out = cmd.output().unwrap();
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "run.sh {url} failed: {}\n{table}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut passed = BTreeMap::new();
        for line in table.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 3
                && (cols[2] == "PASS" || cols[2] == "FAIL")
                && cols[0].starts_with("20")
            {
                passed.insert((cols[0].to_owned(), cols[1].to_owned()), cols[2] == "PASS");
            }
        }
        Self { passed, table }
    }

    /// The runner's closing line, "N passed, M failed".
    pub fn summary(&self) -> &str {
        let last = self.table.lines().rev().find(|l| l.contains(" passed, "));
        last.unwrap_or_default()
    }

    /// The table row of `scenario`.
    pub fn row(&self, (version, name): &Scenario) -> &str {
        let row = self.table.lines().find(|l| {
            let mut cols = l.split_whitespace();
            cols.next() == Some(version) && cols.next() == Some(name)
        });
        row.unwrap_or_default()
    }
}

/// Check that `direct` (the upstream on its own) and `via` (the same upstream through mcpgw) ran
/// the same scenarios, at least `at_least` of them; returns the scenarios that pass directly but
/// fail through mcpgw, after printing both summaries and the regressions' rows.
pub fn regressions(direct: &Run, via: &Run, at_least: usize) -> Vec<Scenario> {
    eprintln!("direct:        {}", direct.summary());
    eprintln!("through mcpgw: {}", via.summary());
    assert!(
        direct.passed.len() >= at_least,
        "too few scenarios ran:\n{}",
        direct.table
    );
    assert_eq!(
        direct.passed.keys().collect::<Vec<_>>(),
        via.passed.keys().collect::<Vec<_>>(),
        "the same scenarios must run"
    );
    let lost: Vec<Scenario> = direct
        .passed
        .iter()
        .filter(|(k, passed)| **passed && !via.passed[*k])
        .map(|(k, _)| k.clone())
        .collect();
    for k in &lost {
        eprintln!("regressed: {}", via.row(k));
    }
    lost
}
