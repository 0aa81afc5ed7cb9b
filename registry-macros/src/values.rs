//! Value parsers for the string literals whose contents have a grammar of their own: durations
//! (`warmup = "1m30s"`) and tag templates (`tag(idc = "${IDC:-hz}")`). They return a plain
//! reason on error; `validate.rs` spans it on the literal.

use crate::model::Part;

/// Parses `"500ms"`, `"30s"`, `"2m"`, `"1h"`, `"1m30s"` into nanoseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    if text.is_empty() {
        return Err("it is empty".into());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| "the number is too large".to_string())?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u64 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("{number} has no unit (ms, s, m or h)")),
            other => return Err(format!("unknown unit `{other}` (use ms, s, m or h)")),
        };
        total = number
            .checked_mul(scale)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| "the duration is too large".to_string())?;
    }
    Ok(total)
}

/// Splits a tag value into text and `${VAR}` / `${VAR:-default}` parts.
pub fn parse_template(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        literal.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            format!(
                "`${{` at byte {} is never closed with `}}`",
                text.len() - rest.len() + start
            )
        })?;
        let body = &after[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default.to_string())),
            None => (body, None),
        };
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            let shown = if name.is_empty() {
                "an empty name".to_string()
            } else {
                format!("`{name}`")
            };
            return Err(format!("`${{{body}}}` has {shown} where a variable name ([A-Za-z_][A-Za-z0-9_]*) is expected"));
        }
        if default.as_deref().is_some_and(|d| d.contains("${")) {
            return Err(format!(
                "`${{{body}}}`: a default cannot contain another `${{`"
            ));
        }
        if !literal.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut literal)));
        }
        parts.push(Part::Var {
            name: name.to_string(),
            default,
        });
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Text(literal));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_duration("2m"), Ok(120_000_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("30x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999h").is_err());
    }

    #[test]
    fn templates() {
        assert_eq!(
            parse_template("plain").unwrap(),
            vec![Part::Text("plain".into())]
        );
        assert_eq!(
            parse_template("${IDC:-hz}-x").unwrap(),
            vec![
                Part::Var {
                    name: "IDC".into(),
                    default: Some("hz".into())
                },
                Part::Text("-x".into())
            ]
        );
        assert_eq!(parse_template("$5 ${A}").unwrap().len(), 2);
        assert!(parse_template("${IDC").is_err());
        assert!(parse_template("${}").is_err());
        assert!(parse_template("${1A}").is_err());
        assert!(parse_template("${A:x}").is_err());
        assert!(parse_template("${A:-${B}}").is_err());
    }
}
