//! The validated attribute as plain data: what `validate.rs` produces and `expand.rs` consumes.
//! Only valid values can be written here.

use syn::{Ident, Path};

/// Everything `expand` needs; only valid values reach it.
pub struct Model {
    pub ident: Ident,
    pub name: String,
    pub weight: u32,
    pub payload_codec: Option<String>,
    pub warmup_nanos: u64,
    pub tags: Vec<Tag>,
    pub krate: Path,
}

/// One validated tag.
pub struct Tag {
    pub key: String,
    pub raw: String,
    pub parts: Vec<Part>,
}

/// A piece of a tag value.
#[derive(Debug, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Var {
        name: String,
        default: Option<String>,
    },
}
