//! The drain delay: how long a registrar keeps serving between deregistering and stopping.

use std::time::Duration;

use crate::env::{EnvError, Vars, DRAIN_DELAY_ENV};

/// 5 s of Kitex's resolver refresh interval plus 1 s of margin.
pub(crate) const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(6);

/// Parses `500ms`, `6s`, `2m` or a bare number of seconds.
pub(crate) fn parse_delay(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(number)),
        "ms" => Some(Duration::from_millis(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
}

/// The drain delay the environment sets, if it sets one.
pub(crate) fn drain_delay_from_env(vars: &Vars) -> Result<Option<Duration>, EnvError> {
    vars.parse(
        DRAIN_DELAY_ENV,
        "a duration such as `6s`, `500ms`, `2m` or whole seconds",
        parse_delay,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_written_form() {
        assert_eq!(parse_delay("6s"), Some(Duration::from_secs(6)));
        assert_eq!(parse_delay("6"), Some(Duration::from_secs(6)));
        assert_eq!(parse_delay(" 1500ms "), Some(Duration::from_millis(1500)));
        assert_eq!(parse_delay("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_delay("0"), Some(Duration::ZERO));
        assert_eq!(parse_delay("1.5s"), None);
        assert_eq!(parse_delay("s"), None);
        assert_eq!(parse_delay("-1"), None);
        assert_eq!(parse_delay("6h"), None);
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
