//! The drain delay: how long a registrar keeps serving between deregistering and stopping.

use std::time::Duration;

use super::error::RegistrarError;

/// The environment variable that sets the drain delay (`6s`, `1500ms`, `2m`, or bare seconds
/// such as `6`); it wins over [`RegistrarBuilder::drain_delay`](crate::RegistrarBuilder::drain_delay).
pub const DRAIN_DELAY_ENV: &str = "SERVICE_REGISTRY_DRAIN_DELAY";

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
pub(crate) fn drain_delay_from_env() -> Result<Option<Duration>, RegistrarError> {
    match std::env::var(DRAIN_DELAY_ENV) {
        Ok(value) => parse_delay(&value)
            .map(Some)
            .ok_or(RegistrarError::InvalidDuration {
                value,
                source_name: DRAIN_DELAY_ENV,
            }),
        Err(_) => Ok(None),
    }
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
}
