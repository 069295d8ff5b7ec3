//! A conformance suite for K2V servers: every operation of the K2V specification (Garage's
//! `doc/drafts/k2v-spec.md`), its parameters and headers, content negotiation, causality,
//! tombstones, batch paging, polls, error codes and bodies, and keys drawn from the whole of
//! UTF-8 (a property test), checked against what the specification says and what Garage does.
//!
//! It talks to any endpoint ([`Target`]) over plain HTTP/1.1 with requests signed by the
//! `aws-sigv4` crate, so it runs against Shoal (in `cargo test`) and against Garage (by
//! `shoal-bench conformance`) alike. [`run_all`] prints one line per case and a closing
//! `P passed, F failed`.
//!
//! Where Garage departs from the specification or from what a careful store must do, the case
//! follows the specification and says so in its `note`; see the README's compatibility section.

pub mod cases;
pub mod client;

pub use client::{Reply, Req, Signing, Target, enc};

/// One check.
pub struct Case {
    /// Its name, one word with dashes.
    pub name: &'static str,
    /// Where Garage is known to answer otherwise, and why the case holds to its expectation.
    pub note: Option<&'static str>,
    /// The check: `Err` says what was wrong.
    pub check: fn(&Ctx) -> Result<(), String>,
}

/// What a case runs against.
pub struct Ctx<'a> {
    /// The endpoint.
    pub target: &'a Target,
    /// A prefix unique to this run, so that runs never see each other's items.
    pub run: String,
    /// Cases of the property test on keys (see [`cases::KEY_CASES`]).
    pub key_cases: u32,
}

impl Ctx<'_> {
    /// A partition key unique to this run and case.
    pub fn pk(&self, name: &str) -> String {
        format!("{}-{name}", self.run)
    }
}

/// The outcome of one case on one target.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The case.
    pub name: &'static str,
    /// `None` for a pass, else what was wrong.
    pub failure: Option<String>,
}

/// Runs every case (or those whose name contains `filter`) against `target`; returns the
/// outcomes in order.
pub fn run_all(target: &Target, filter: Option<&str>, key_cases: u32) -> Vec<Outcome> {
    let ctx = Ctx {
        target,
        run: format!(
            "conf{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros())
        ),
        key_cases,
    };
    cases::all()
        .iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
        .map(|c| {
            let failure =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (c.check)(&ctx)))
                    .unwrap_or_else(|_| Err("the case panicked".into()))
                    .err();
            Outcome {
                name: c.name,
                failure,
            }
        })
        .collect()
}

/// The closing line for `outcomes`: `P passed, F failed`.
pub fn summary(outcomes: &[Outcome]) -> String {
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    format!("{} passed, {failed} failed", outcomes.len() - failed)
}
