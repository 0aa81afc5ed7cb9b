//! The `#[service]` attribute of [`service-registry`](https://docs.rs/service-registry). Use it
//! through `service_registry::service`; the generated code refers to `::service_registry`.
//!
//! The work is split by stage, as in `thiserror-impl`: `args` parses the attribute into plain
//! data, `validate` checks it against the annotated item (collecting every mistake, with the
//! help of the `values` parsers) into a `model::Model`, and `expand` generates the descriptor
//! from that model.

use proc_macro::TokenStream;

mod args;
mod expand;
mod model;
mod validate;
mod values;

#[cfg(test)]
mod proptests;

/// Declares a type as a registrable service.
///
/// ```
/// use service_registry::{service, Endpoint};
///
/// #[service(
///     name = "billing.invoice",          // required: 1..=255 of [A-Za-z0-9._-]
///     weight = 40,                       // 1..=10000, default 10
///     payload_codec = "protobuf",        // thrift, protobuf, grpc, json, ...
///     warmup = "30s",                    // humantime: "500ms", "2m", "1m30s"
///     tag(idc = "${IDC:-hz}", cluster = "blue"), // values may read the environment
/// )]
/// pub struct Invoices;
///
/// assert_eq!(Invoices::INFO.service_name, "billing.invoice");
/// assert_eq!(Invoices::INFO.warmup, std::time::Duration::from_secs(30));
/// assert_eq!(Invoices::INFO.tags[0].value.resolve_with(|_| None).unwrap(), "hz");
/// ```
///
/// The item is emitted unchanged, plus an `impl service_registry::Endpoint` whose `INFO` is the
/// service's `EndpointBasicInfo`, and an `inventory` submission that lets the `Registrar` find
/// it. `crate = "path"` changes the `::service_registry` root the generated code refers to.
///
/// Every mistake in the attribute is a compile error on the offending token; on error the item
/// is still emitted so the rest of the crate type-checks.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match pipeline(attr.into(), item.clone()) {
        Ok(expanded) => expanded.into(),
        // The original item and the errors, as tokio-macros does.
        Err(err) => {
            let errors = err.to_compile_error();
            quote::quote!(#item #errors).into()
        }
    }
}

/// Parse, validate, expand, on `proc_macro2` tokens so that tests can run it outside a compiler.
fn pipeline(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let item = syn::parse2::<syn::Item>(item)?;
    let model = validate::validate(args::parse(attr)?, &item)?;
    Ok(expand::expand(&item, &model))
}
