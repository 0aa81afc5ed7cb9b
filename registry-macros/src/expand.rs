//! Generation: the descriptor and its `inventory` submission, from a validated [`Model`].
//! Nothing here can fail.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::Item;

use crate::model::{Model, Part, Tag};

fn option(value: &Option<String>) -> TokenStream {
    match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

fn tag(krate: &syn::Path, tag: &Tag) -> TokenStream {
    let Tag { key, raw, parts } = tag;
    let parts = parts.iter().map(|part| match part {
        Part::Text(text) => quote!(#krate::endpoint::TagPart::Text(#text)),
        Part::Var { name, default } => {
            let default = option(default);
            quote!(#krate::endpoint::TagPart::Var { name: #name, default: #default })
        }
    });
    quote! {
        #krate::endpoint::StaticTag {
            key: #key,
            value: #krate::endpoint::TagTemplate { raw: #raw, parts: &[#(#parts),*] },
        }
    }
}

/// The item unchanged, an `Endpoint` impl holding the descriptor, and one `inventory::submit!`.
pub fn expand(item: &Item, model: &Model) -> TokenStream {
    let Model {
        ident,
        name,
        weight,
        payload_codec,
        warmup_nanos,
        tags,
        krate,
    } = model;
    let codec = option(payload_codec);
    let tags = tags.iter().map(|t| tag(krate, t));
    let type_name = ident.to_string();
    // `line!()` spanned on the type's name reports the line of the type, not of the attribute.
    let line = quote_spanned!(ident.span()=> ::core::line!());
    quote! {
        #item

        const _: () = {
            #[automatically_derived]
            impl #krate::Endpoint for #ident {
                const INFO: #krate::EndpointBasicInfo = #krate::EndpointBasicInfo {
                    service_name: #name,
                    weight: #weight,
                    payload_codec: #codec,
                    warmup: ::core::time::Duration::from_nanos(#warmup_nanos),
                    tags: &[#(#tags),*],
                    type_name: ::core::concat!(::core::module_path!(), "::", #type_name),
                    file: ::core::file!(),
                    line: #line,
                };
            }

            #krate::__private::inventory::submit! {
                #krate::endpoint::ServiceEntry::new(&<#ident as #krate::Endpoint>::INFO)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_is_data_only() {
        let item: Item = syn::parse_quote!(
            pub struct Echo;
        );
        let args = crate::args::parse(quote!(
            name = "echo",
            weight = 20,
            tag(idc = "${IDC:-hz}"),
            crate = "::sr"
        ))
        .unwrap();
        let model = crate::validate::validate(args, &item).ok().unwrap();
        let out = expand(&item, &model).to_string();
        for expected in [
            "pub struct Echo ;",
            "impl :: sr :: Endpoint for Echo",
            "service_name : \"echo\"",
            "weight : 20u32",
            ":: sr :: endpoint :: TagPart :: Var { name : \"IDC\" , default : :: core :: option :: Option :: Some (\"hz\") }",
            ":: sr :: __private :: inventory :: submit !",
        ] {
            assert!(out.contains(expected), "missing `{expected}` in {out}");
        }
    }
}
