//! Parsing: the attribute's tokens as plain data, every value keeping its span.
//!
//! Only syntax is checked here; what the values mean is `validate.rs`'s job, so that one build
//! reports every mistake.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitStr, Token};

/// The attribute's arguments in the order written.
#[derive(Default)]
pub struct RawArgs {
    pub entries: Vec<Entry>,
}

/// One `key = value`, `key(...)` or bare `key`.
pub struct Entry {
    pub key: Ident,
    pub value: Value,
}

/// What follows a key.
pub enum Value {
    /// `key = expr` (a literal, or anything else, which validation rejects). Boxed: an `Expr`
    /// is large, the more so with the `span-locations` spans the tests turn on.
    Expr(Box<Expr>),
    /// `tag(k = "v", ...)`.
    Tags(Vec<TagEntry>),
    /// `key(...)` for a key that takes no list.
    List(Span),
    /// `key` alone.
    Flag,
}

/// One `k = "v"` inside `tag(...)`.
pub struct TagEntry {
    pub key: String,
    pub key_span: Span,
    pub value: Expr,
}

impl Parse for TagEntry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let (key, key_span) = if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            (lit.value(), lit.span())
        } else {
            let ident = Ident::parse_any(input).map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected a tag key: `tag(idc = \"hz\")` or `tag(\"k8s.zone\" = \"a\")`",
                )
            })?;
            (ident.unraw().to_string(), ident.span())
        };
        input.parse::<Token![=]>()?;
        let value: Expr = input.parse()?;
        Ok(TagEntry {
            key,
            key_span,
            value,
        })
    }
}

fn entry(meta: &ParseNestedMeta) -> syn::Result<Entry> {
    let key = match meta.path.get_ident() {
        Some(ident) => ident.clone(),
        None if meta.path.is_ident("crate") => Ident::new("crate", Span::call_site()),
        None => {
            return Err(meta.error("expected a key such as `name`, `weight` or `tag(...)`"));
        }
    };
    let value = if meta.input.peek(Token![=]) {
        Value::Expr(Box::new(meta.value()?.parse()?))
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        let paren = syn::parenthesized!(content in meta.input);
        if key == "tag" {
            let list = Punctuated::<TagEntry, Token![,]>::parse_terminated(&content)?;
            Value::Tags(list.into_iter().collect())
        } else {
            content.parse::<TokenStream>()?;
            Value::List(paren.span.join())
        }
    } else {
        Value::Flag
    };
    Ok(Entry { key, value })
}

/// Parses `name = "..", weight = 10, tag(k = "v"), ...`.
pub fn parse(tokens: TokenStream) -> syn::Result<RawArgs> {
    let mut args = RawArgs::default();
    let parser = syn::meta::parser(|meta| {
        args.entries.push(entry(&meta)?);
        Ok(())
    });
    parser.parse2(close_with_a_comma(tokens))?;
    Ok(args)
}

/// `tokens` with a trailing `,` (spanned on the last token) unless they already end with one.
/// An error at the very end of the input (`name = "a", weight = 0 < 'x`) is then spanned on
/// the last token the user wrote instead of on the whole attribute (syn spans the end of a
/// top-level stream on the call site); the parser accepts a trailing comma either way.
fn close_with_a_comma(tokens: TokenStream) -> TokenStream {
    let Some(last) = tokens.clone().into_iter().last() else {
        return tokens;
    };
    if matches!(&last, proc_macro2::TokenTree::Punct(p) if p.as_char() == ',') {
        return tokens;
    }
    let mut comma = proc_macro2::Punct::new(',', proc_macro2::Spacing::Alone);
    comma.set_span(last.span());
    let mut closed = tokens;
    closed.extend([proc_macro2::TokenTree::Punct(comma)]);
    closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn parses_every_form() {
        let args = parse(quote!(
            name = "a",
            weight = 1,
            tag(idc = "x", "a.b" = "y"),
            crate = "c",
            flag,
            list(1)
        ))
        .unwrap();
        let keys: Vec<String> = args.entries.iter().map(|e| e.key.to_string()).collect();
        assert_eq!(keys, ["name", "weight", "tag", "crate", "flag", "list"]);
        match &args.entries[2].value {
            Value::Tags(tags) => {
                assert_eq!(tags[0].key, "idc");
                assert_eq!(tags[1].key, "a.b");
            }
            _ => panic!("tag(...) should parse as tags"),
        }
    }

    #[test]
    fn rejects_broken_syntax() {
        assert!(parse(quote!(name "a")).is_err());
        assert!(parse(quote!(tag(= "a"))).is_err());
    }
}
