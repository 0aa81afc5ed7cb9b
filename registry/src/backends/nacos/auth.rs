//! Logging in: Nacos' `POST /nacos/v1/auth/login` (HTTP port) hands out an access token that
//! every gRPC request then carries in its `accessToken` header, until it expires.
//!
//! The exchange is spoken by hyper ([`crate::http_client`]); the answer is read as bytes up to
//! [`LOGIN_ANSWER_LIMIT`]. Errors name the user and the server, never the password, and never
//! copy a successful answer (it holds the token); of a refusal they quote a short excerpt, and
//! only when it names no token.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;

use super::config::NacosConfig;
use super::error::NacosError;
use crate::http_client::{self, HttpError, ReadBody};

/// Where the login answers.
const LOGIN_PATH: &str = "/nacos/v1/auth/login";

/// The most of a login answer that is read: a token and its TTL take a few hundred bytes (rnacos
/// 0.8.8: 128), Java Nacos' answer under 1 KiB. A longer answer is an error.
pub(crate) const LOGIN_ANSWER_LIMIT: usize = 64 * 1024;

/// The most of a refusal's text quoted in an error.
const QUOTED: usize = 200;

/// An access token and when to renew it. Its `Debug` shows no token.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: String,
    /// Half-way through its life: renewed from then on.
    pub renew_at: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("renew_at", &self.renew_at)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginAnswer {
    access_token: Option<String>,
    #[serde(default)]
    token_ttl: u64,
}

/// Logs in as the configured user; `None` when no user is configured.
pub(crate) async fn login(config: &NacosConfig) -> Result<Option<Token>, NacosError> {
    let Some((user, password)) = &config.user else {
        return Ok(None);
    };
    let server = config.http_addr();
    let form = format!(
        "username={}&password={}",
        form_encode(user),
        form_encode(password)
    );
    let request = http_client::request(Method::POST, &server, LOGIN_PATH)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    let exchange = http_client::send(
        &server,
        request,
        Bytes::from(form),
        ReadBody::UpTo(LOGIN_ANSWER_LIMIT),
    );
    let unreachable = |reason: String| NacosError::Unreachable {
        server: server.clone(),
        reason,
    };
    let bad_answer = |reason: String| NacosError::BadAnswer {
        server: server.clone(),
        what: format!("the login of user `{user}`"),
        reason,
    };
    let answer = tokio::time::timeout(config.request_timeout, exchange)
        .await
        .map_err(|_| {
            unreachable(format!(
                "the login got no answer within {:?}",
                config.request_timeout
            ))
        })?
        .map_err(|err| match err {
            HttpError::TooLarge { .. } => bad_answer(err.to_string()),
            err => unreachable(format!("login: {err}")),
        })?;
    read_answer(user, &server, answer.status, &answer.body)
}

/// The token in a login answer, or why there is none.
fn read_answer(
    user: &str,
    server: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<Option<Token>, NacosError> {
    let bad_answer = |reason: String| NacosError::BadAnswer {
        server: server.to_string(),
        what: format!("the login of user `{user}`"),
        reason,
    };
    if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED {
        return Err(NacosError::Unauthenticated {
            user: user.to_string(),
            server: server.to_string(),
            reason: quote(status, body),
        });
    }
    if status != StatusCode::OK {
        return Err(NacosError::Refused {
            server: server.to_string(),
            what: format!("the login of user `{user}`"),
            code: status.as_u16(),
            message: quote(status, body),
        });
    }
    // A successful answer holds the token: it is never quoted, whatever is wrong with it.
    let answer: LoginAnswer = serde_json::from_slice(body).map_err(|err| {
        bad_answer(format!(
            "the answer ({} bytes) is not Nacos' login JSON ({})",
            body.len(),
            json_problem(&err)
        ))
    })?;
    let value = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad_answer("the answer holds no access token".to_string()))?;
    Ok(Some(Token {
        value,
        renew_at: Instant::now() + renew_after(answer.token_ttl),
    }))
}

/// What a refusal says, for an error: its text when it is short, printable and names no
/// token; else only its status and size.
fn quote(status: StatusCode, body: &[u8]) -> String {
    let text = std::str::from_utf8(body).ok().map(str::trim);
    match text {
        Some(text)
            if text.chars().count() <= QUOTED
                && !text.chars().any(char::is_control)
                && !text.to_ascii_lowercase().contains("token") =>
        {
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {text}")
            }
        }
        _ => format!("HTTP {status}, {} bytes not shown", body.len()),
    }
}

/// What is wrong with an answer that is not the JSON expected: `serde_json`'s category only,
/// as its message can quote the answer ("invalid type: string \"...\"").
fn json_problem(err: &serde_json::Error) -> &'static str {
    match err.classify() {
        serde_json::error::Category::Io => "cannot be read",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "not the expected fields",
        serde_json::error::Category::Eof => "cut short",
    }
}

/// When to renew a token the server says lives `ttl` seconds: half-way through, so that it is
/// never used past its life (a refusal renews it as well). A server that names no TTL gets Java
/// Nacos' default (18000 s).
fn renew_after(ttl: u64) -> Duration {
    let ttl = if ttl == 0 { DEFAULT_TTL } else { ttl };
    Duration::from_secs(ttl) / 2
}

/// Java Nacos' default token life (`nacos.core.auth.default.token.expire.seconds`).
const DEFAULT_TTL: u64 = 18_000;

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_half_way_through_the_servers_ttl() {
        assert_eq!(renew_after(2), Duration::from_secs(1));
        assert_eq!(renew_after(3600), Duration::from_secs(1800));
        assert_eq!(renew_after(0), Duration::from_secs(9000));
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }

    const TOKEN: &str = "tok-5f3a9c";

    fn answer(status: u16, body: &str) -> Result<Option<Token>, NacosError> {
        read_answer(
            "nacos",
            "h:8848",
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
        )
    }

    #[test]
    fn a_good_answer_gives_the_token_and_its_renewal() {
        let body = format!(r#"{{"accessToken":"{TOKEN}","tokenTtl":3600,"globalAdmin":true}}"#);
        let token = answer(200, &body).unwrap().unwrap();
        assert_eq!(token.value, TOKEN);
        assert!(token.renew_at > Instant::now() + Duration::from_secs(1700));
        assert!(!format!("{token:?}").contains(TOKEN), "{token:?}");
    }

    #[test]
    fn no_error_quotes_a_successful_answer() {
        for body in [
            format!(r#"{{"accessToken":"{TOKEN}","tokenTtl":"{TOKEN}"}}"#),
            format!(r#"{{"accessToken":"{TOKEN}","tokenTtl":-1}}"#),
            format!(r#"{{"accessToken":"{TOKEN}""#),
            format!(r#"<html>{TOKEN}</html>"#),
            format!(r#"{{"token":"{TOKEN}"}}"#),
        ] {
            let err = answer(200, &body).unwrap_err();
            assert!(matches!(err, NacosError::BadAnswer { .. }), "{err:?}");
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains(TOKEN), "{text}");
                assert!(
                    text.contains("`nacos`") && text.contains("h:8848"),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn a_refusal_is_quoted_only_when_short_and_free_of_tokens() {
        let err = answer(403, "unknown user!").unwrap_err();
        assert!(matches!(err, NacosError::Unauthenticated { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("HTTP 403 Forbidden: unknown user!"),
            "{err}"
        );
        let err = answer(500, &format!(r#"{{"accessToken":"{TOKEN}"}}"#)).unwrap_err();
        assert!(
            matches!(err, NacosError::Refused { code: 500, .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains(TOKEN), "{err}");
        assert!(err.to_string().contains("bytes not shown"), "{err}");
        let long = "x".repeat(QUOTED + 1);
        assert!(!answer(401, &long).unwrap_err().to_string().contains(&long));
        let err = read_answer("u", "h:1", StatusCode::FORBIDDEN, b"\xff\xfe").unwrap_err();
        assert!(err.to_string().contains("2 bytes not shown"), "{err}");
    }
}
