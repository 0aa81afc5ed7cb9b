//! Meaning: turns [`RawArgs`] and the annotated item into a [`Model`], collecting every mistake
//! as a `syn::Error` spanned on the offending token.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Item, Lit, LitStr, Path};

use crate::args::{Entry, RawArgs, TagEntry, Value};
use crate::model::{Model, Tag};
use crate::values::{parse_duration, parse_template};

const KEYS: &[&str] = &["name", "weight", "payload_codec", "warmup", "tag", "crate"];
const MAX_NAME_LEN: usize = 255;

/// The weight bounds and default. A proc-macro crate cannot depend on its runtime crate, so these
/// copy `service_registry::{MIN_WEIGHT, MAX_WEIGHT, DEFAULT_WEIGHT}`. Tests keep them equal: here
/// against the runtime constants (a dev-dependency) and with `weight_bounds`; in the runtime
/// crate, `info::tests` compiles `#[service]` at both bounds.
const MIN_WEIGHT: u32 = 1;
const MAX_WEIGHT: u32 = 10_000;
const DEFAULT_WEIGHT: u32 = 10;

/// Collects errors so that one build reports them all (as serde_derive's `Ctxt`).
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let error = syn::Error::new(span, message);
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }
}

fn lit_str(expr: &Expr) -> Option<&LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s),
        _ => None,
    }
}

/// Checks the item and the arguments; `Err` carries every mistake found.
pub fn validate(args: RawArgs, item: &Item) -> Result<Model, syn::Error> {
    let mut errors = Errors::default();
    let ident = check_item(item, &mut errors);

    let mut seen: HashMap<String, Span> = HashMap::new();
    let mut name = None;
    let mut weight = DEFAULT_WEIGHT;
    let mut payload_codec = None;
    let mut warmup_nanos = 0;
    let mut tags: Vec<Tag> = Vec::new();
    let mut tag_keys: HashMap<String, Span> = HashMap::new();
    let mut krate: Option<Path> = None;

    for Entry { key, value } in args.entries {
        let key_name = key.to_string();
        if !KEYS.contains(&key_name.as_str()) {
            errors.push(key.span(), unknown_key_message(&key_name));
            continue;
        }
        if key_name != "tag" {
            if seen.contains_key(&key_name) {
                errors.push(key.span(), format!("duplicate key `{key_name}`: it is already set earlier in this attribute; keep one"));
                continue;
            }
            seen.insert(key_name.clone(), key.span());
        }
        let expr = match (key_name.as_str(), value) {
            ("tag", Value::Tags(entries)) => {
                check_tags(entries, &mut tags, &mut tag_keys, &mut errors);
                continue;
            }
            ("tag", _) => {
                errors.push(
                    key.span(),
                    "`tag` takes a list: `tag(idc = \"hz\", cluster = \"blue\")`",
                );
                continue;
            }
            (_, Value::Expr(expr)) => expr,
            (_, Value::List(span)) => {
                errors.push(
                    span,
                    format!("`{key_name}` takes a value, not a list: `{key_name} = ...`"),
                );
                continue;
            }
            // `args` only produces tag lists for `tag`; treat any other list alike.
            (_, Value::Tags(_)) => {
                errors.push(
                    key.span(),
                    format!("`{key_name}` takes a value, not a list: `{key_name} = ...`"),
                );
                continue;
            }
            (_, Value::Flag) => {
                errors.push(
                    key.span(),
                    format!("`{key_name}` needs a value: `{key_name} = ...`"),
                );
                continue;
            }
        };
        match key_name.as_str() {
            "name" => name = check_name(&expr, &mut errors),
            "weight" => weight = check_weight(&expr, &mut errors).unwrap_or(DEFAULT_WEIGHT),
            "payload_codec" => payload_codec = check_codec(&expr, &mut errors),
            "warmup" => warmup_nanos = check_warmup(&expr, &mut errors).unwrap_or(0),
            "crate" => krate = check_crate(&expr, &mut errors),
            _ => unreachable!("KEYS lists every key handled here"),
        }
    }
    if !seen.contains_key("name") {
        errors.push(
            Span::call_site(),
            "missing `name`: write `#[service(name = \"echo\")]`",
        );
    }

    match (errors.0, ident, name) {
        (None, Some(ident), Some(name)) => Ok(Model {
            ident,
            name,
            weight,
            payload_codec,
            warmup_nanos,
            tags,
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::service_registry)),
        }),
        (Some(error), _, _) => Err(error),
        // Every `None` above pushed an error, so this arm is only reached with errors present.
        (None, _, _) => Err(syn::Error::new(
            Span::call_site(),
            "invalid #[service] attribute",
        )),
    }
}

fn check_item(item: &Item, errors: &mut Errors) -> Option<Ident> {
    let (ident, generics) = match item {
        Item::Struct(s) => (&s.ident, &s.generics),
        Item::Enum(e) => (&e.ident, &e.generics),
        other => {
            let (span, what) = match other {
                Item::Fn(f) => (f.sig.fn_token.span, "a function"),
                Item::Trait(t) => (t.trait_token.span, "a trait"),
                Item::Impl(i) => (i.impl_token.span, "an impl block"),
                Item::Union(u) => (u.union_token.span, "a union"),
                Item::Mod(m) => (m.mod_token.span, "a module"),
                Item::Type(t) => (t.type_token.span, "a type alias"),
                other => (other.span(), "this item"),
            };
            errors.push(
                span,
                format!("#[service] applies to a struct or an enum, not to {what}"),
            );
            return None;
        }
    };
    if !generics.params.is_empty() {
        errors.push(
            generics.params.span(),
            "#[service] types cannot be generic: a registered service needs one concrete descriptor; annotate a concrete type (e.g. a newtype over `T<Concrete>`)",
        );
        return None;
    }
    Some(ident.clone())
}

fn check_name(expr: &Expr, errors: &mut Errors) -> Option<String> {
    let Some(lit) = lit_str(expr) else {
        errors.push(
            expr.span(),
            "`name` must be a string literal: `name = \"echo\"`",
        );
        return None;
    };
    let name = lit.value();
    if name.is_empty() {
        errors.push(
            lit.span(),
            "service name is empty; give 1 to 255 characters of A-Z a-z 0-9 . _ -",
        );
        return None;
    }
    if name.chars().count() > MAX_NAME_LEN {
        errors.push(
            lit.span(),
            format!(
                "service name has {} characters; at most {MAX_NAME_LEN} are allowed",
                name.chars().count()
            ),
        );
        return None;
    }
    if let Some((position, bad)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        let why = if bad == '/' {
            " (registries use `/` as the path separator)"
        } else {
            ""
        };
        errors.push(lit.span(), format!("invalid character {bad:?} at position {position} in service name{why}; allowed: A-Z a-z 0-9 . _ -"));
        return None;
    }
    Some(name)
}

fn check_weight(expr: &Expr, errors: &mut Errors) -> Option<u32> {
    let message =
        format!("`weight` must be an integer from {MIN_WEIGHT} to {MAX_WEIGHT}: `weight = 10`");
    let Expr::Lit(ExprLit {
        lit: Lit::Int(int), ..
    }) = expr
    else {
        errors.push(expr.span(), message);
        return None;
    };
    match int.base10_parse::<u64>() {
        Ok(w) if (u64::from(MIN_WEIGHT)..=u64::from(MAX_WEIGHT)).contains(&w) => {
            u32::try_from(w).ok()
        }
        Ok(w) => {
            errors.push(
                int.span(),
                format!("weight {w} is out of range; use {MIN_WEIGHT} to {MAX_WEIGHT}"),
            );
            None
        }
        Err(_) => {
            errors.push(int.span(), message);
            None
        }
    }
}

fn check_codec(expr: &Expr, errors: &mut Errors) -> Option<String> {
    let Some(lit) = lit_str(expr) else {
        errors.push(expr.span(), "`payload_codec` must be a string literal: `thrift`, `protobuf`, `grpc`, `json` or another codec name");
        return None;
    };
    let codec = lit.value();
    if codec.is_empty()
        || !codec
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
    {
        errors.push(lit.span(), "`payload_codec` must be one word (A-Z a-z 0-9 . _ - +), such as `thrift`, `protobuf`, `grpc` or `json`");
        return None;
    }
    Some(codec)
}

fn check_warmup(expr: &Expr, errors: &mut Errors) -> Option<u64> {
    let Some(lit) = lit_str(expr) else {
        errors.push(
            expr.span(),
            "`warmup` must be a duration string such as \"500ms\", \"30s\", \"2m\" or \"1m30s\"",
        );
        return None;
    };
    match parse_duration(&lit.value()) {
        Ok(nanos) => Some(nanos),
        Err(why) => {
            errors.push(lit.span(), format!("invalid duration {:?}: {why}; write e.g. \"500ms\", \"30s\", \"2m\", \"1h\" or \"1m30s\" (humantime's grammar)", lit.value()));
            None
        }
    }
}

fn check_crate(expr: &Expr, errors: &mut Errors) -> Option<Path> {
    let Some(lit) = lit_str(expr) else {
        errors.push(
            expr.span(),
            "`crate` must be a string literal holding a path: `crate = \"::my::service_registry\"`",
        );
        return None;
    };
    // Module style: a crate path names a crate or module, never a type with generic arguments
    // (`a<b>` would expand to `a<b>::Endpoint`, which does not parse).
    match lit.parse_with(Path::parse_mod_style) {
        Ok(path) => Some(path),
        Err(_) => {
            errors.push(
                lit.span(),
                format!(
                    "`crate = {:?}` is not a module path: write the path of the crate, like `crate = \"::service_registry\"`",
                    lit.value()
                ),
            );
            None
        }
    }
}

fn check_tags(
    entries: Vec<TagEntry>,
    tags: &mut Vec<Tag>,
    keys: &mut HashMap<String, Span>,
    errors: &mut Errors,
) {
    for TagEntry {
        key,
        key_span,
        value,
    } in entries
    {
        if key.is_empty() {
            errors.push(key_span, "tag key is empty");
            continue;
        }
        if keys.contains_key(&key) {
            errors.push(key_span, format!("duplicate tag key `{key}`: each tag key may appear once across all `tag(...)` lists"));
            continue;
        }
        keys.insert(key.clone(), key_span);
        let Some(lit) = lit_str(&value) else {
            errors.push(value.span(), format!("tag `{key}` must have a string value: `{key} = \"...\"` (write numbers in quotes)"));
            continue;
        };
        let raw = lit.value();
        match parse_template(&raw) {
            Ok(parts) => tags.push(Tag { key, raw, parts }),
            Err(why) => errors.push(
                lit.span(),
                format!("tag `{key}`: {why}; write `${{VAR}}` or `${{VAR:-default}}`"),
            ),
        }
    }
}

fn unknown_key_message(key: &str) -> String {
    let mut message = format!("unknown key `{key}`; expected one of: {}", KEYS.join(", "));
    if let Some(close) = KEYS
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min()
        .map(|(_, k)| k)
    {
        message.push_str(&format!(" (did you mean `{close}`?)"));
    }
    message
}

/// Edit distance where an insertion, deletion, substitution or swap of neighbours costs 1
/// (optimal string alignment), so `nmae` is one step from `name`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn model(args: proc_macro2::TokenStream) -> Result<Model, syn::Error> {
        let item: Item = syn::parse_quote!(
            struct S;
        );
        validate(crate::args::parse(args).unwrap(), &item)
    }

    fn messages(args: proc_macro2::TokenStream) -> Vec<String> {
        match model(args) {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn defaults_and_values() {
        let m = model(quote!(
            name = "a.b-c_d",
            payload_codec = "protobuf",
            warmup = "30s",
            tag(idc = "x"),
            tag(z = "${Z:-1}")
        ))
        .ok()
        .unwrap();
        assert_eq!(m.weight, 10);
        assert_eq!(m.payload_codec.as_deref(), Some("protobuf"));
        assert_eq!(m.warmup_nanos, 30_000_000_000);
        assert_eq!(m.tags.len(), 2);
    }

    #[test]
    fn every_mistake_is_reported() {
        let all = messages(quote!(
            nmae = "x",
            weight = 0,
            weight = 1,
            warmup = "3x",
            tag(a = "1", a = "2", b = 3)
        ));
        assert_eq!(all.len(), 7, "{all:#?}");
        assert!(all[0].contains("did you mean `name`"));
        assert!(all.iter().any(|m| m.contains("missing `name`")));
    }

    #[test]
    fn weight_constants_match_the_runtime_crate() {
        assert_eq!(MIN_WEIGHT, service_registry::MIN_WEIGHT);
        assert_eq!(MAX_WEIGHT, service_registry::MAX_WEIGHT);
        assert_eq!(DEFAULT_WEIGHT, service_registry::DEFAULT_WEIGHT);
    }

    /// The bounds as a user writes them: `service_registry`'s `info::tests` compiles
    /// `weight = 1` and `weight = 10000` and compares them with `MIN_WEIGHT` and `MAX_WEIGHT`;
    /// here the values just outside are rejected with the documented message.
    #[test]
    fn weight_bounds() {
        let weight = |w: proc_macro2::TokenStream| model(quote!(name = "w", weight = #w));
        assert_eq!(weight(quote!(1)).ok().unwrap().weight, 1);
        assert_eq!(weight(quote!(10000)).ok().unwrap().weight, 10_000);
        assert_eq!(weight(quote!(10_000u32)).ok().unwrap().weight, 10_000);
        assert_eq!(model(quote!(name = "w")).ok().unwrap().weight, 10);
        assert_eq!(
            messages(quote!(name = "w", weight = 10001)),
            ["weight 10001 is out of range; use 1 to 10000"]
        );
        assert_eq!(
            messages(quote!(name = "w", weight = 0)),
            ["weight 0 is out of range; use 1 to 10000"]
        );
        for not_a_weight in [quote!(-1), quote!(99999999999999999999999), quote!("10")] {
            assert_eq!(
                messages(quote!(name = "w", weight = #not_a_weight)),
                ["`weight` must be an integer from 1 to 10000: `weight = 10`"]
            );
        }
    }

    #[test]
    fn name_rules() {
        assert!(messages(quote!(name = "a/b"))[0].contains("'/'"));
        assert!(messages(quote!(name = ""))[0].contains("empty"));
        let long = "a".repeat(256);
        assert!(messages(quote!(name = #long))[0].contains("256"));
        assert!(messages(quote!(name = 5))[0].contains("string literal"));
    }

    #[test]
    fn no_suggestion_for_distant_keys() {
        assert!(!unknown_key_message("zzzzzz").contains("did you mean"));
        assert!(unknown_key_message("wieght").contains("`weight`"));
    }
}
