//! Property tests of the whole pipeline (parse → validate → expand) on bad input.
//!
//! Whatever tokens the compiler hands the attribute:
//! - nothing panics;
//! - on success, the expansion parses as Rust items;
//! - on error, every message (`syn::Error` iterates over the combined errors) points inside the
//!   input. The input is lexed from text with `span-locations` on, so each token knows its line
//!   and column. The only messages allowed the call-site span instead, which rustc shows on the
//!   whole `#[service(...)]` attribute, are those about the attribute as a whole: "missing
//!   `name`" and syn's "unexpected end of input" when the list stops in the middle of an entry.
//!
//! Each property runs 512 cases (under a second in all); failures are shrunk and their seeds
//! kept in `proptest-regressions/` beside this crate, like any proptest. The structured
//! property must also produce every message `validate.rs` has, so that it cannot pass by
//! never reaching a check.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use proc_macro2::{Delimiter, LineColumn, TokenStream, TokenTree};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};

use crate::model::Part;
use crate::values::{parse_duration, parse_template};

const CASES: u32 = 512;

/// Messages that may use the call-site span (the attribute as a whole).
const WHOLE_ATTRIBUTE: &[&str] = &["missing `name`", "unexpected end of input"];

/// One fragment of each message `validate.rs` can produce. The structured property must reach
/// every one of them, so that the span check is known to cover each check, not only the parser.
const VALIDATION_MESSAGES: &[&str] = &[
    "unknown key",
    "duplicate key",
    "duplicate tag key",
    "tag key is empty",
    "must have a string value",
    "write `${VAR}`",
    "is out of range",
    "`weight` must be an integer",
    "`name` must be a string literal",
    "service name is empty",
    "characters; at most",
    "in service name",
    "`payload_codec` must be one word",
    "`payload_codec` must be a string literal",
    "invalid duration",
    "`warmup` must be a duration",
    "is not a module path",
    "`crate` must be a string literal",
    "needs a value",
    "takes a value, not a list",
    "`tag` takes a list",
    "missing `name`",
    "applies to a struct or an enum",
    "cannot be generic",
];

/// What one property saw, printed at the end (`cargo test -- --nocapture`) and checked so that
/// a generator that stops reaching the pipeline fails loudly instead of passing vacuously.
#[derive(Default)]
struct Stats {
    cases: Cell<usize>,
    lexed: Cell<usize>,
    expanded: Cell<usize>,
    rejected: Cell<usize>,
    messages: Cell<usize>,
    at_call_site: Cell<usize>,
    /// Messages by their `VALIDATION_MESSAGES` fragment; syntax errors count as "syntax".
    kinds: RefCell<BTreeMap<&'static str, usize>>,
}

impl Stats {
    fn bump(cell: &Cell<usize>, by: usize) {
        cell.set(cell.get() + by);
    }

    fn count_kind(&self, message: &str) {
        let kind = VALIDATION_MESSAGES
            .iter()
            .find(|fragment| message.contains(*fragment))
            .unwrap_or(&"syntax");
        *self.kinds.borrow_mut().entry(kind).or_default() += 1;
    }

    fn report(&self, property: &str) -> String {
        format!(
            "{property}: {} cases, {} lexed, {} expanded, {} rejected with {} messages ({} at the call site); by kind: {:?}",
            self.cases.get(),
            self.lexed.get(),
            self.expanded.get(),
            self.rejected.get(),
            self.messages.get(),
            self.at_call_site.get(),
            self.kinds.borrow(),
        )
    }
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        source_file: Some(file!()),
        ..Config::default()
    })
}

/// Runs `property` on `strategy` and fails the test with the shrunk input if it ever fails.
fn run<S: Strategy>(property: &str, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S::Value: std::fmt::Debug,
{
    if let Err(failure) = runner().run(&strategy, test) {
        panic!("{property}: {failure}");
    }
}

/// The position just past the last character of `text`, as `proc_macro2` counts (1-based
/// lines, 0-based columns in characters).
fn end_of(text: &str) -> LineColumn {
    let line = 1 + text.matches('\n').count();
    let last_line = text.rsplit('\n').next().unwrap_or("");
    LineColumn {
        line,
        column: last_line.chars().count(),
    }
}

fn key(at: LineColumn) -> (usize, usize) {
    (at.line, at.column)
}

/// Feeds `(attr) item` through the pipeline and checks the properties. The text starts with a
/// newline so that every real token is on line 2 or later, and the call-site span (line 1,
/// column 0 outside a compiler) cannot be mistaken for a token of the input.
fn check(attr: &str, item: &str, stats: &Stats) -> TestCaseResult {
    Stats::bump(&stats.cases, 1);
    let source = format!("\n({attr})\n{item}");
    // Text that does not lex is not something rustc would hand to the macro.
    let Ok(tokens) = TokenStream::from_str(&source) else {
        return Ok(());
    };
    let mut trees = tokens.into_iter();
    let Some(TokenTree::Group(group)) = trees.next() else {
        return Ok(());
    };
    if group.delimiter() != Delimiter::Parenthesis {
        return Ok(());
    }
    Stats::bump(&stats.lexed, 1);
    let item: TokenStream = trees.collect();

    match crate::pipeline(group.stream(), item) {
        Ok(expanded) => {
            Stats::bump(&stats.expanded, 1);
            let parsed = syn::parse2::<syn::File>(expanded.clone());
            prop_assert!(parsed.is_ok(), "expansion does not parse: {expanded}");
        }
        Err(error) => {
            Stats::bump(&stats.rejected, 1);
            // The macro turns the error into `compile_error!` tokens; that must not panic either.
            let _ = error.to_compile_error();
            let first = (2, 0);
            let last = key(end_of(&source));
            for message in error {
                Stats::bump(&stats.messages, 1);
                let span = message.span();
                let (start, end) = (key(span.start()), key(span.end()));
                let text = message.to_string();
                stats.count_kind(&text);
                if start == (1, 0) && end == (1, 0) {
                    Stats::bump(&stats.at_call_site, 1);
                    prop_assert!(
                        WHOLE_ATTRIBUTE.iter().any(|m| text.contains(m)),
                        "{text:?} is spanned on the call site, not on the offending token"
                    );
                    continue;
                }
                prop_assert!(
                    first <= start && start <= end && end <= last,
                    "{text:?} spans {start:?}..{end:?}, outside the input {first:?}..{last:?}"
                );
            }
        }
    }
    Ok(())
}

// ----- Generators: the text of attribute arguments ---------------------------------------------

/// A string with any characters.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        "[a-z0-9._${}:/ -]{0,12}",
        Just(String::new()),
        Just("${IDC:-hz}".to_string()),
        Just("1m30s".to_string()),
    ]
}

/// `strategy`'s strings written as Rust string literals.
fn quoted(strategy: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    strategy.prop_map(|s| format!("{s:?}"))
}

/// One of `choices`, as a Rust string literal.
fn quoted_one_of(choices: &'static [&'static str]) -> impl Strategy<Value = String> {
    select(choices).prop_map(|s| format!("{s:?}"))
}

/// Every kind of literal the lexer accepts.
fn literal() -> impl Strategy<Value = String> {
    let suffix = select(&["", "u8", "u32", "u64", "i32", "usize", "u128", "f64", "_x"][..]);
    prop_oneof![
        quoted(any_text()),
        any_text().prop_map(|s| format!("r#\"{}\"#", s.replace("\"#", ""))),
        "[ -~]{0,8}".prop_map(|s| format!("b{s:?}")),
        "[a-z ]{0,8}".prop_map(|s| format!("c{s:?}")),
        any::<char>().prop_map(|c| format!("{c:?}")),
        (any::<i64>(), suffix.clone()).prop_map(|(n, s)| format!("{n}{s}")),
        (any::<u128>(), suffix).prop_map(|(n, s)| format!("{n}{s}")),
        "[0-9]{1,40}",
        "[0-9][0-9_]{0,8}",
        any::<u32>().prop_map(|n| format!("{n:#x}")),
        any::<u8>().prop_map(|n| format!("{n:#o}")),
        any::<u8>().prop_map(|n| format!("{n:#b}")),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("1.5e10".to_string()),
        Just("1e-3f32".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
    ]
}

/// Values that are not literals: negations, paths, operators, blocks, macros.
fn expression() -> impl Strategy<Value = String> {
    prop_oneof![
        literal().prop_map(|l| format!("-{l}")),
        select(
            &[
                "some::path",
                "1 + 2",
                "[1, 2]",
                "(1, \"a\")",
                "{ \"x\" }",
                "concat!(\"a\", \"b\")",
                "&\"a\"",
                "\"a\".to_string()",
                "|| 1",
                "name",
                "crate",
                "Self",
                "r#type",
                "..",
                "_",
            ][..]
        )
        .prop_map(str::to_string),
    ]
}

/// Keys: the real ones, near misses, keywords, raw and Unicode identifiers, paths.
fn key_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(&["name", "weight", "payload_codec", "warmup", "tag", "crate"][..])
            .prop_map(str::to_string),
        1 => select(
            &[
                "nmae", "wieght", "tags", "Name", "r#name", "r#tag", "self", "super", "fn", "async",
                "_", "名前", "a::b", "::name", "crate::x", "$crate",
            ][..]
        )
        .prop_map(str::to_string),
        1 => "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
    ]
}

/// Punctuation and brackets that do not belong in the list.
fn garbage() -> impl Strategy<Value = String> {
    select(
        &[
            "#",
            "$",
            "@",
            "::",
            "=>",
            "->",
            "..",
            "!",
            "?",
            "&&",
            "'a",
            "{}",
            "[]",
            "()",
            "<>",
            "<",
            ">",
            "=",
            ",",
            ";",
            "~",
            "^",
            "|",
            "/",
            "*",
            "(,)",
            "(=)",
            "#[x]",
            "/** doc */",
        ][..],
    )
    .prop_map(str::to_string)
}

/// `name = ..`: valid names and every way a name can be wrong.
fn name_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => quoted("[a-zA-Z0-9._-]{1,20}".boxed()),
        2 => Just("\"\"".to_string()),
        1 => quoted_one_of(&["a/b", "a b", "é", "echo\n", "x:y"]),
        1 => quoted("[a-z]{0,4}[^a-zA-Z0-9._-][a-z]{0,4}".boxed()),
        3 => quoted("[a-z]{254,270}".boxed()),
        1 => literal(),
        1 => expression(),
    ]
}

/// `weight = ..`: the bounds, beyond them, and non-integers.
fn weight_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(&["0", "1", "10000", "10_000", "10001", "10u8", "10u64", "-1", "1.0", "\"10\""][..])
            .prop_map(str::to_string),
        2 => (0u64..=20_000).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => literal(),
        1 => expression(),
    ]
}

/// `payload_codec = ..`.
fn codec_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => quoted_one_of(&["thrift", "protobuf", "grpc", "json", "x+y", "", "two words", "a/b"]),
        1 => quoted(any_text()),
        1 => literal(),
        1 => expression(),
    ]
}

/// `warmup = ..`: durations that parse, that overflow, that have no or a wrong unit.
fn warmup_value() -> impl Strategy<Value = String> {
    let unit = select(&["ms", "s", "m", "h", "", "x", "us", " s"][..]);
    prop_oneof![
        2 => quoted_one_of(&["500ms", "30s", "2m", "1h", "1m30s", "", "30", "s", "99999999999999h", "-1s"]),
        2 => quoted(vec((any::<u32>(), unit), 1..4).prop_map(|terms| {
            terms.iter().map(|(n, u)| format!("{n}{u}")).collect::<String>()
        })),
        1 => quoted(any_text()),
        1 => literal(),
        1 => expression(),
    ]
}

/// `crate = ..`: paths and strings that are not paths.
fn crate_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => quoted_one_of(&["::service_registry", "crate", "::a::b", "self::x", "", "1", "a b", "::", "a::", "\"", "a<b>"]),
        1 => quoted(any_text()),
        1 => literal(),
        1 => expression(),
    ]
}

/// Tag keys: few, so that duplicates are common, plus quoted, empty, raw and odd ones.
fn tag_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(&["idc", "cluster", "\"k8s.zone\"", "a"][..]).prop_map(str::to_string),
        1 => Just("\"\"".to_string()),
        1 => select(&["r#type", "fn", "_", "\"a\"", "名前"][..]).prop_map(str::to_string),
        1 => quoted(any_text()),
        1 => key_name(),
    ]
}

/// One `k = v` inside `tag(...)`; the value is mostly a string, sometimes a broken template or
/// not a string at all.
fn tag_entry() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        3 => quoted(any_text()),
        2 => quoted_one_of(&["${", "${}", "${1A}", "${A:x}", "${A:-${B}}", "x${A}y${B:-z}", "$5"]),
        1 => literal(),
        1 => expression(),
    ];
    (tag_key(), value).prop_map(|(k, v)| format!("{k} = {v}"))
}

/// The inside of `tag(...)`: mostly well-formed entries, sometimes nesting or garbage.
fn tag_list() -> impl Strategy<Value = String> {
    let item = prop_oneof![
        24 => tag_entry(),
        1 => vec(tag_entry(), 0..3).prop_map(|v| format!("tag({})", v.join(", "))),
        1 => (key_name(), vec(tag_entry(), 0..3)).prop_map(|(k, v)| format!("{k}({})", v.join(","))),
        1 => literal().prop_map(|v| format!("{v} = \"x\"")),
        1 => tag_key(),
        1 => garbage(),
    ];
    vec(item, 0..5).prop_map(|v| v.join(", "))
}

/// One `key = value`, `key(...)` or bare key: mostly well-formed so that validation runs,
/// with values aimed at each key's rules; sometimes something that does not parse.
fn entry() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => name_value().prop_map(|v| format!("name = {v}")),
        3 => weight_value().prop_map(|v| format!("weight = {v}")),
        2 => codec_value().prop_map(|v| format!("payload_codec = {v}")),
        2 => warmup_value().prop_map(|v| format!("warmup = {v}")),
        2 => crate_value().prop_map(|v| format!("crate = {v}")),
        6 => tag_list().prop_map(|v| format!("tag({v})")),
        3 => (key_name(), literal()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => (key_name(), expression()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => (key_name(), tag_list()).prop_map(|(k, v)| format!("{k}({v})")),
        2 => key_name(),
        1 => (key_name(), "[a-z0-9 ]{0,4}").prop_map(|(k, v)| format!("{k}({v})")),
        1 => prop_oneof![
            (key_name(), garbage()).prop_map(|(k, g)| format!("{k} {g}")),
            key_name().prop_map(|k| format!("{k} =")),
            (key_name(), literal()).prop_map(|(k, v)| format!("{k} == {v}")),
            garbage(),
        ],
    ]
}

/// A whole argument list: entries (often with duplicated keys) joined by commas, sometimes by
/// other separators, across lines.
fn arguments() -> impl Strategy<Value = String> {
    let separator = prop_oneof![
        40 => Just(", "),
        4 => Just(",\n"),
        1 => Just(" "),
        1 => Just(";"),
        1 => Just(",,"),
    ];
    (vec((entry(), separator), 0..7), any::<bool>()).prop_map(|(entries, trailing)| {
        let mut text = String::new();
        for (i, (entry, separator)) in entries.iter().enumerate() {
            text.push_str(entry);
            if i + 1 < entries.len() || trailing {
                text.push_str(separator);
            }
        }
        text
    })
}

/// A valid attribute, sometimes with one more entry, so that the success path is covered too.
fn mostly_valid() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9._-]{0,20}",
        prop::option::of(1u32..=10_000),
        prop::option::of(select(&["thrift", "protobuf", "json", "x+y"][..])),
        prop::option::of(select(&["500ms", "30s", "1m30s", "1h"][..])),
        vec(("[a-z_][a-z0-9_]{0,6}", any_text()), 0..3),
        prop::option::of(select(&["::service_registry", "crate", "::a::b"][..])),
        prop::option::weighted(0.25, entry()),
    )
        .prop_map(|(name, weight, codec, warmup, tags, krate, extra)| {
            let mut text = format!("name = {name:?}");
            if let Some(weight) = weight {
                write!(text, ", weight = {weight}").unwrap();
            }
            if let Some(codec) = codec {
                write!(text, ", payload_codec = {codec:?}").unwrap();
            }
            if let Some(warmup) = warmup {
                write!(text, ", warmup = {warmup:?}").unwrap();
            }
            if !tags.is_empty() {
                let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
                write!(text, ", tag({})", tags.join(", ")).unwrap();
            }
            if let Some(krate) = krate {
                write!(text, ", crate = {krate:?}").unwrap();
            }
            if let Some(extra) = extra {
                write!(text, ", {extra}").unwrap();
            }
            text
        })
}

/// Annotated items: mostly the supported ones, also the rejected kinds, generics, broken items.
fn item() -> impl Strategy<Value = String> {
    let supported = select(
        &[
            "struct S;",
            "pub struct Echo { a: u32 }",
            "enum E { A, B }",
            "#[derive(Debug)]\nstruct D(u8);",
        ][..],
    );
    let generic = select(&["struct G<T>(T);", "enum L<'a> { A(&'a str) }"][..]);
    let other = select(
        &[
            "fn f() {}",
            "union U { a: u32 }",
            "trait T {}",
            "impl S {}",
            "mod m {}",
            "type A = u8;",
            "const C: u8 = 1;",
            "struct",
            "struct S",
            "",
            "struct S; struct T;",
        ][..],
    );
    prop_oneof![6 => supported, 1 => generic, 2 => other].prop_map(str::to_string)
}

/// Pieces from which random text is glued: tokens of the attribute's grammar and stray
/// characters, so that a good share of the random strings still lexes.
const PIECES: &[&str] = &[
    "name",
    "weight",
    "tag",
    "crate",
    "warmup",
    "payload_codec",
    "x",
    "=",
    "==",
    ",",
    "(",
    ")",
    "\"",
    "\"x\"",
    "\"${A:-b}\"",
    "\"30s\"",
    "\"\"",
    "1",
    "0",
    "10001",
    "-",
    ".",
    ":",
    "::",
    "$",
    "{",
    "}",
    "[",
    "]",
    "r#",
    "'",
    "_",
    " ",
    "\n",
    "#",
    "é",
    "\\",
    "/",
    "//",
    "/*",
    "*/",
];

// ----- Properties ------------------------------------------------------------------------------

#[test]
fn structured_arguments_never_panic_and_errors_point_into_the_input() {
    let stats = Stats::default();
    run("structured", (arguments(), item()), |(attr, item)| {
        check(&attr, &item, &stats)
    });
    let report = stats.report("structured");
    eprintln!("{report}");
    assert!(stats.lexed.get() > CASES as usize / 2, "{report}");
    let kinds = stats.kinds.borrow();
    let missed: Vec<_> = VALIDATION_MESSAGES
        .iter()
        .filter(|kind| !kinds.contains_key(*kind))
        .collect();
    assert!(missed.is_empty(), "never produced: {missed:?}; {report}");
}

#[test]
fn mostly_valid_arguments_expand_or_point_into_the_input() {
    let stats = Stats::default();
    run("mostly valid", (mostly_valid(), item()), |(attr, item)| {
        check(&attr, &item, &stats)
    });
    eprintln!("{}", stats.report("mostly valid"));
    assert!(
        stats.expanded.get() > CASES as usize / 10,
        "{}",
        stats.report("mostly valid")
    );
}

#[test]
fn random_text_never_panics_and_errors_point_into_the_input() {
    let stats = Stats::default();
    let glued = vec(select(PIECES), 0..24).prop_map(|pieces| pieces.concat());
    run("random text", (glued, item()), |(attr, item)| {
        check(&attr, &item, &stats)
    });
    eprintln!("{}", stats.report("random text"));
    assert!(
        stats.lexed.get() > CASES as usize / 10,
        "{}",
        stats.report("random text")
    );
}

#[test]
fn arbitrary_strings_never_panic_and_errors_point_into_the_input() {
    let stats = Stats::default();
    run(
        "arbitrary strings",
        (any::<String>(), item()),
        |(attr, item)| check(&attr, &item, &stats),
    );
    eprintln!("{}", stats.report("arbitrary strings"));
}

#[test]
fn templates_round_trip() {
    run("templates", "[a-z${}:_ -]{0,24}", |text| {
        if let Ok(parts) = parse_template(&text) {
            let mut rebuilt = String::new();
            for part in parts {
                match part {
                    Part::Text(t) => rebuilt.push_str(&t),
                    Part::Var { name, default } => match default {
                        Some(d) => write!(rebuilt, "${{{name}:-{d}}}").unwrap(),
                        None => write!(rebuilt, "${{{name}}}").unwrap(),
                    },
                }
            }
            prop_assert_eq!(rebuilt, text);
        }
        Ok(())
    });
}

#[test]
fn durations_add_up() {
    let unit = select(
        &[
            ("ms", 1_000_000u128),
            ("s", 1_000_000_000),
            ("m", 60_000_000_000),
            ("h", 3_600_000_000_000),
        ][..],
    );
    run("durations", vec((any::<u32>(), unit), 1..4), |terms| {
        let text: String = terms.iter().map(|(n, (u, _))| format!("{n}{u}")).collect();
        let expected: u128 = terms
            .iter()
            .map(|(n, (_, scale))| u128::from(*n) * scale)
            .sum();
        match parse_duration(&text) {
            Ok(nanos) => prop_assert_eq!(u128::from(nanos), expected),
            Err(why) => prop_assert!(expected > u128::from(u64::MAX), "{text}: {why}"),
        }
        Ok(())
    });
    run("durations", ".{0,12}", |text| {
        let _ = parse_duration(&text);
        Ok(())
    });
}
