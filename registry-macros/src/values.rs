//! Value parsers for the string literals whose contents have a grammar of their own: durations
//! (`warmup = "1m30s"`) and tag templates (`tag(idc = "${IDC:-hz}")`). They return a plain
//! reason on error; `validate.rs` spans it on the literal.

use crate::model::Part;

/// Parses a duration in [`humantime`]'s grammar (`"500ms"`, `"30s"`, `"2m"`, `"1h"`,
/// `"1m30s"`, `"1min 30s"`), the grammar the registry crate's duration variables use too, into
/// nanoseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let duration = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    u64::try_from(duration.as_nanos()).map_err(|_| "the duration is too large".to_string())
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
        assert_eq!(parse_duration("1min 30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("250us"), Ok(250_000));
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
