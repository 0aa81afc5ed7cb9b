//! Tag values that may refer to environment variables (`${VAR}` / `${VAR:-default}`).
//!
//! The `#[service]` attribute parses every tag value at compile time and emits it as a
//! [`TagTemplate`]: a list of literal text and variable references. Resolution happens at
//! registration time, against the process environment.

use std::collections::BTreeMap;

use thiserror::Error;

/// One piece of a tag value template.
///
/// ```
/// use service_registry::endpoint::TagPart;
/// let part = TagPart::Var { name: "IDC", default: Some("hz") };
/// assert_ne!(part, TagPart::Text("hz"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagPart {
    /// Literal text, used as is.
    Text(&'static str),
    /// `${name}` or `${name:-default}`: the environment variable `name`, or `default` when the
    /// variable is unset (an empty variable is used as is, like the shell's `:-` does not: see
    /// [`TagTemplate::resolve_with`]).
    Var {
        /// The environment variable to read.
        name: &'static str,
        /// The text used when the variable is unset or empty.
        default: Option<&'static str>,
    },
}

/// A tag value as written in the attribute, already split into literal text and variables.
///
/// ```
/// use service_registry::endpoint::{TagPart, TagTemplate};
///
/// const IDC: TagTemplate = TagTemplate {
///     raw: "${IDC:-hz}-a",
///     parts: &[TagPart::Var { name: "IDC", default: Some("hz") }, TagPart::Text("-a")],
/// };
/// let value = IDC.resolve_with(|_| None).unwrap();
/// assert_eq!(value, "hz-a");
/// let value = IDC.resolve_with(|name| (name == "IDC").then(|| "sh".to_string())).unwrap();
/// assert_eq!(value, "sh-a");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagTemplate {
    /// The value exactly as written in the attribute.
    pub raw: &'static str,
    /// The parsed pieces; their concatenation after resolution is the tag value.
    pub parts: &'static [TagPart],
}

/// A tag as declared in `#[service(tag(key = "value"))]`.
///
/// ```
/// use service_registry::endpoint::{StaticTag, TagPart, TagTemplate};
///
/// const TAG: StaticTag = StaticTag {
///     key: "cluster",
///     value: TagTemplate { raw: "blue", parts: &[TagPart::Text("blue")] },
/// };
/// assert_eq!(TAG.value.resolve_with(|_| None).unwrap(), "blue");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticTag {
    /// The tag key.
    pub key: &'static str,
    /// The tag value template.
    pub value: TagTemplate,
}

/// A `${VAR}` without default whose variable is not set.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("environment variable `{variable}` is not set and the tag value `{raw}` gives no default (write `${{{variable}:-default}}` or set the variable)")]
pub struct MissingVariable {
    /// The variable that was looked up.
    pub variable: String,
    /// The whole template, as written.
    pub raw: String,
}

impl TagTemplate {
    /// Resolves the template against the process environment.
    ///
    /// ```
    /// use service_registry::endpoint::{TagPart, TagTemplate};
    ///
    /// let t = TagTemplate { raw: "x", parts: &[TagPart::Text("x")] };
    /// assert_eq!(t.resolve().unwrap(), "x");
    /// ```
    pub fn resolve(&self) -> Result<String, MissingVariable> {
        self.resolve_with(|name| std::env::var(name).ok())
    }

    /// Resolves the template with `lookup` standing in for the environment.
    ///
    /// A variable that is unset, or set to the empty string, takes its default when it has one
    /// (the shell's `${VAR:-default}`); an unset variable without default is an error; an empty
    /// one without default resolves to the empty string.
    ///
    /// ```
    /// use service_registry::endpoint::{TagPart, TagTemplate};
    ///
    /// let t = TagTemplate { raw: "${ZONE}", parts: &[TagPart::Var { name: "ZONE", default: None }] };
    /// assert!(t.resolve_with(|_| None).is_err());
    /// assert_eq!(t.resolve_with(|_| Some("z1".into())).unwrap(), "z1");
    /// ```
    pub fn resolve_with(
        &self,
        mut lookup: impl FnMut(&str) -> Option<String>,
    ) -> Result<String, MissingVariable> {
        let mut out = String::new();
        for part in self.parts {
            match *part {
                TagPart::Text(text) => out.push_str(text),
                TagPart::Var { name, default } => match (lookup(name), default) {
                    (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                    (Some(value), _) => out.push_str(&value),
                    (None, Some(default)) => out.push_str(default),
                    (None, None) => {
                        return Err(MissingVariable {
                            variable: name.to_string(),
                            raw: self.raw.to_string(),
                        })
                    }
                },
            }
        }
        Ok(out)
    }
}

/// Resolves every tag of a descriptor, stopping at the first missing variable.
pub(crate) fn resolve_tags(
    tags: &[StaticTag],
) -> Result<BTreeMap<String, String>, (&'static str, MissingVariable)> {
    tags.iter()
        .map(|tag| {
            tag.value
                .resolve()
                .map(|value| (tag.key.to_string(), value))
                .map_err(|err| (tag.key, err))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TagTemplate = TagTemplate {
        raw: "a-${X}-${Y:-dy}",
        parts: &[
            TagPart::Text("a-"),
            TagPart::Var {
                name: "X",
                default: None,
            },
            TagPart::Text("-"),
            TagPart::Var {
                name: "Y",
                default: Some("dy"),
            },
        ],
    };

    #[test]
    fn resolves_vars_and_defaults() {
        let env = |name: &str| match name {
            "X" => Some("x".to_string()),
            _ => None,
        };
        assert_eq!(T.resolve_with(env).unwrap(), "a-x-dy");
    }

    #[test]
    fn empty_value_takes_default() {
        let env = |_: &str| Some(String::new());
        assert_eq!(T.resolve_with(env).unwrap(), "a--dy");
    }

    #[test]
    fn missing_without_default_names_variable() {
        let err = T.resolve_with(|_| None).unwrap_err();
        assert_eq!(err.variable, "X");
        assert!(err.to_string().contains("`X`"), "{err}");
    }
}
