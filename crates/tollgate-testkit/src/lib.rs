//! Test support shared by every test suite of the workspace (a dev-dependency only).
//!
//! Layout: one rule, [`component`], and [`tshark`], the check that Wireshark reads our bytes.
//! Tests that drive a third-party component (PostgreSQL, tshark, freediameterd,
//! python-diameter, Kamailio, Wireshark's dictionary, `../shared` fixtures) ask [`component`]
//! whether to run. Under `./scripts/test`, which sets
//! [`REQUIRE_ENV`], a missing component fails the test with its install hint, so a green run
//! cannot hide that no real client was used. Under a plain `cargo test` the test says it is
//! skipped and why, and passes.

#![forbid(unsafe_code)]

pub mod tshark;

/// Set (to `1`) by `scripts/test`: every component the suites use must be present.
pub const REQUIRE_ENV: &str = "TOLLGATE_TEST_REQUIRE_ALL";

/// Whether components are required in this run (`scripts/test` and so CI).
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `Some(value)` when the component is there. When it is not (`None`): panics with `hint`
/// under `scripts/test`, else prints one "skipped" line and returns `None` for the test to
/// return early.
///
/// `what` names the component ("tshark", "PostgreSQL (TOLLGATE_TEST_PG_URL)"); `hint` says how
/// to get it ("apt-get install tshark", "scripts/test starts one").
pub fn component<T>(found: Option<T>, what: &str, hint: &str) -> Option<T> {
    decide(found, what, hint, required())
}

fn decide<T>(found: Option<T>, what: &str, hint: &str, required: bool) -> Option<T> {
    if found.is_some() {
        return found;
    }
    if required {
        panic!("{what} is required under scripts/test ({REQUIRE_ENV}) but missing: {hint}");
    }
    println!("skipped: {what} is missing ({hint}); scripts/test installs it and fails without it");
    None
}

/// [`component`] for a yes/no check: `true` when the test should run.
pub fn present(found: bool, what: &str, hint: &str) -> bool {
    component(found.then_some(()), what, hint).is_some()
}

/// Whether `program args…` runs and exits 0 (stdout and stderr discarded).
pub fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_component_fails_when_required_and_skips_otherwise() {
        assert_eq!(decide(None::<()>, "x", "y", false), None);
        let failed = std::panic::catch_unwind(|| {
            decide(None::<()>, "tshark", "apt-get install tshark", true)
        });
        let message = failed.expect_err("a required, missing component must fail the test");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            text.contains("tshark") && text.contains("apt-get install tshark"),
            "{text}"
        );
        assert_eq!(decide(Some(1), "x", "y", true), Some(1));
    }

    #[test]
    fn a_present_component_runs() {
        assert_eq!(component(Some(3), "x", "y"), Some(3));
        assert!(runs("true", &[]));
        assert!(!runs("false", &[]));
        assert!(!runs("/nonexistent/program", &[]));
    }
}
