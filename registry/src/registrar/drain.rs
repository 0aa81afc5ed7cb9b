//! The drain delay: how long a registrar keeps serving between deregistering and stopping.

use std::time::Duration;

use crate::env::{EnvError, Vars, DRAIN_DELAY_ENV};

/// 5 s of Kitex's resolver refresh interval plus 1 s of margin.
pub(crate) const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(6);

/// Parses a duration in [`humantime`]'s grammar (`500ms`, `6s`, `2m`, `1m30s`), the grammar of
/// `#[service(warmup = ..)]` too.
pub(crate) fn parse_delay(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

/// The drain delay the environment sets, if it sets one.
pub(crate) fn drain_delay_from_env(vars: &Vars) -> Result<Option<Duration>, EnvError> {
    vars.parse(
        DRAIN_DELAY_ENV,
        "a duration such as `6s`, `500ms`, `2m` or `1m30s`",
        parse_delay,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_written_form() {
        assert_eq!(parse_delay("6s"), Some(Duration::from_secs(6)));
        assert_eq!(parse_delay("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_delay("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_delay(" 1500ms "), Some(Duration::from_millis(1500)));
        assert_eq!(parse_delay("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_delay("0"), Some(Duration::ZERO));
        // One grammar with `#[service(warmup = ..)]`: a number needs its unit.
        assert_eq!(parse_delay("6"), None);
        assert_eq!(parse_delay("s"), None);
        assert_eq!(parse_delay("-1"), None);
        assert_eq!(parse_delay("6x"), None);
    }

    #[test]
    fn a_bad_variable_is_an_error_that_names_it() {
        let vars = Vars::from_pairs(&[(DRAIN_DELAY_ENV, "soon")]);
        let err = drain_delay_from_env(&vars).unwrap_err();
        assert!(
            err.to_string()
                .contains("SERVICE_REGISTRY_DRAIN_DELAY = `soon`"),
            "{err}"
        );
        let vars = Vars::from_pairs(&[(DRAIN_DELAY_ENV, "250ms")]);
        assert_eq!(
            drain_delay_from_env(&vars).unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(drain_delay_from_env(&Vars::from_pairs(&[])).unwrap(), None);
    }
}
